package portal

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

// The upload decoders stream whatever a manufacturer's tooling sends: they
// must end (EOF or an error) without panicking.

func drain(next RowReader) {
	for i := 0; i < 100000; i++ {
		if _, err := next(); err != nil {
			if errors.Is(err, io.EOF) {
				return
			}
			if !errors.Is(err, errRowShape) {
				return
			}
		}
	}
}

func FuzzCSVRows(f *testing.F) {
	f.Add([]byte("deviceId,claimCode,deviceCert\nd1,code-1,\n\"d2\",\"c,2\",\"-----BEGIN\"\n"))
	f.Add([]byte("deviceId\nd1\n"))
	f.Add([]byte("\ufeffdeviceId,claimCode\nd1,c,extra\n"))
	f.Add([]byte("\"unterminated\n"))
	f.Fuzz(func(t *testing.T, body []byte) {
		next, err := CSVRows(bytes.NewReader(body))
		if err == nil {
			drain(next)
		}
	})
}

func FuzzJSONRows(f *testing.F) {
	f.Add([]byte(`[{"deviceId":"d1","claimCode":"code-1"},{"deviceId":"d2"}]`))
	f.Add([]byte(`[`))
	f.Add([]byte(`{"deviceId":"d1"}`))
	f.Add([]byte(`[1,2,3]`))
	f.Fuzz(func(t *testing.T, body []byte) {
		next, err := JSONRows(bytes.NewReader(body))
		if err == nil {
			drain(next)
		}
	})
}
