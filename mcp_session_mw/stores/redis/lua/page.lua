-- Cluster: the session hashes live in other slots; returns a flat {member, score, ...}.
return entries
