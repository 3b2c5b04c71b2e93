package store

import "time"

// Observer receives what the store measures; metrics turns it into
// Prometheus series. store does not import Prometheus.
type Observer interface {
	// ObserveTx is called once per transaction with its latency, the
	// retries it took (serialization failures or lost connections) and its
	// final error.
	ObserveTx(op string, d time.Duration, retries int, err error)
	// ObserveBatch is called per group commit with the items it carried.
	ObserveBatch(items int)
}

type nopObserver struct{}

func (nopObserver) ObserveTx(string, time.Duration, int, error) {}
func (nopObserver) ObserveBatch(int)                            {}
