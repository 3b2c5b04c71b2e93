// Package ratelimit is the server's per-key rate limiting: GCRA (the generic
// cell rate algorithm, as in throttled and redis-cell) over a sharded map in
// process memory.
//
// GCRA keeps one number per key, the theoretical arrival time (TAT) of the
// next request if the key sent at exactly its rate. A request at now is
// admitted while TAT - now stays within the burst's tolerance, and moves TAT
// one emission interval (1/rate) on. It is a token bucket without the
// refill arithmetic: one int64 per key, one compare and one add per request.
// A key whose TAT lies in the past has its whole burst again, exactly as if
// it had never been seen, so idle keys are dropped without changing any
// answer; that is what bounds memory (see Options.MaxKeys).
//
// Limits are per replica. Each of N replicas behind a load balancer keeps
// its own counts, so a client spread across all of them gets up to N times
// the configured rate, and one pinned to a replica gets the configured rate:
// configure each limit as the share one replica should grant (the total
// divided by N). A shared limiter in the registry would be exact but would
// put a database write on every request, the very cost the limits protect;
// redis-cell would add a dependency the deployment does not otherwise need.
//
// The hot path is one hash, one mutex of 64 (or more) shards, one map
// lookup: see BenchmarkAllowParallel and bench/README.md for the cost.
package ratelimit
