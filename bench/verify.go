package bench

import (
	"context"
	"fmt"
	"net/url"
)

// Verify checks the run against the registry: the devices the portal shows
// enrolled are exactly as many as the enrolments the bench saw succeed, and
// no device holds two credentials (a token used twice would show there).
func (r *Runner) Verify(ctx context.Context, results []Result) error {
	want := 0
	for _, x := range results {
		want += x.Enrolments
	}
	got, doubles := 0, 0
	for after := ""; ; {
		var page struct {
			Devices []struct {
				ID string `json:"deviceId"`
			} `json:"devices"`
			Next string `json:"next"`
		}
		q := url.Values{"prefix": {"bench-"}, "state": {"enrolled"}, "limit": {"1000"}, "after": {after}}
		if err := r.conn.JSON(ctx, "GET", "/api/v1/devices?"+q.Encode(), r.auth(r.t.ManufacturerKey), nil, &page); err != nil {
			return fmt.Errorf("verify: list devices: %w", err)
		}
		got += len(page.Devices)
		// A sample of each page is checked for duplicate credentials.
		for i := 0; i < len(page.Devices); i += 50 {
			var d struct {
				Credentials []any `json:"credentials"`
			}
			if err := r.conn.JSON(ctx, "GET", "/api/v1/devices/"+page.Devices[i].ID, r.auth(r.t.ManufacturerKey), nil, &d); err != nil {
				return fmt.Errorf("verify: device %s: %w", page.Devices[i].ID, err)
			}
			if len(d.Credentials) != 1 {
				doubles++
			}
		}
		if page.Next == "" {
			break
		}
		after = page.Next
	}
	if got != want || doubles != 0 {
		return fmt.Errorf("verify: the registry has %d enrolled devices for %d successful enrolments, %d sampled devices without exactly one credential", got, want, doubles)
	}
	fmt.Fprintf(r.out, "verified: %d enrolments, %d enrolled devices in the registry, no duplicates in the sample\n", want, got)
	return nil
}
