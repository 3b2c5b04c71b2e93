package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/credfactory/credfactory/bench"
)

// factoryClients is how many EST clients the factory line runs: a line's
// stations enrolling at once.
const factoryClients = 64

// runFactory runs `bench --factory N`: every phase's rate, the server's
// peak RSS when the bench started it, and last the line
// "factory: N devices in S s" (the wall time of all phases, verification
// included).
func runFactory(ctx context.Context, runner *bench.Runner, n int, report *benchReport, stop func() int64, out io.Writer) error {
	var peak atomic.Int64
	stopWatch := make(chan struct{})
	if pid := serverPID(); pid > 0 {
		// VmHWM is the peak, but the kernel keeps it: sample VmRSS too, so
		// the figure is this run's.
		go func() {
			t := time.NewTicker(200 * time.Millisecond)
			defer t.Stop()
			for {
				select {
				case <-stopWatch:
					return
				case <-t.C:
					if v := vmStatus(pid, "VmRSS:"); v > peak.Load() {
						peak.Store(v)
					}
				}
			}
		}()
	}
	start := time.Now()
	fmt.Fprintf(out, "factory line: %d devices, %d EST clients\n", n, factoryClients)
	_, res, err := runner.Factory(ctx, n, factoryClients)
	if err == nil {
		vstart := time.Now()
		err = runner.Verify(ctx, []bench.Result{res})
		fmt.Fprintf(out, "  factory %-8s %7d in %6.2f s  %8.0f/s\n", "verify", res.Enrolments, time.Since(vstart).Seconds(),
			float64(res.Enrolments)/time.Since(vstart).Seconds())
	}
	wall := time.Since(start)
	close(stopWatch)
	if stop != nil {
		report.ServerRSSMiB = float64(stop()) / 1024
		fmt.Fprintf(out, "server RSS: peak %.0f MiB during the run (VmHWM %.0f MiB)\n", float64(peak.Load())/1024, report.ServerRSSMiB)
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "factory: %d devices in %.1f s\n", n, wall.Seconds())
	return nil
}

// benchServerPID is the server startBenchServer started (0: --server).
var benchServerPID atomic.Int64

func serverPID() int { return int(benchServerPID.Load()) }

func vmStatus(pid int, field string) int64 {
	raw, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, line := range strings.Split(string(raw), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == field {
			v, _ := strconv.ParseInt(f[1], 10, 64)
			return v
		}
	}
	return 0
}
