-- ARGV: now[, ttl] (without ttl, the session's own). Returns the new expires_at.
return slide(KEYS, ARGV[1], ARGV[2])
