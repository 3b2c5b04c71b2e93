// Package metrics defines credfactory's Prometheus metrics in one place, so
// that names, units and label sets stay consistent across components and the
// dashboards in deploy/ can rely on them. Every label has a bounded set of
// values: operation names, route patterns, error kinds, never IDs.
package metrics
