package maf

import "time"

// SetClock lets a test move the registry's clock (expiry of registrations).
func SetClock(r *Registry, now func() time.Time) { r.now = now }
