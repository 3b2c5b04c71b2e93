// Package bench drives a running credfactory the way factory lines and
// devices do and reports what it sustains: enrolments per second and
// latency percentiles per path and concurrency, errors by code, and the
// server's own HSM operations and database commits per second read from its
// /metrics. Setup (pre-enrolling devices, issuing tokens, precomputing keys
// and CSRs, issuing OBS certificates) happens before the clock starts, so the
// client does not measure itself. It talks to the server through package
// client only.
package bench
