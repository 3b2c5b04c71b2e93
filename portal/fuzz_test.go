package portal

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"testing"
)

// The upload decoders stream whatever a manufacturer's tooling sends: they
// must end (EOF or an error) without panicking.

// drain reads rows until the decoder ends: io.EOF, or an error other than a
// bad row (which the upload reports and reads past). Every row costs a
// decoder at least one byte of its input (a CSV line ends in a newline or
// at EOF; a JSON element is at least one byte), so one still yielding rows
// after size+1 calls on size bytes never ends: that is an error.
func drain(next RowReader, size int) error {
	for range size + 2 {
		if _, err := next(); err != nil && !errors.Is(err, errRowShape) {
			return nil
		}
	}
	return fmt.Errorf("the decoder yielded %d rows from %d bytes without ending", size+2, size)
}

// TestDrainCatchesEndlessDecoder: the fuzz targets below can only catch a
// decoder that never ends if drain says so.
func TestDrainCatchesEndlessDecoder(t *testing.T) {
	tests := []struct {
		name    string
		next    RowReader
		wantErr bool
	}{
		{"endless rows", func() (DeviceRow, error) { return DeviceRow{DeviceID: "d"}, nil }, true},
		{"endless bad rows", func() (DeviceRow, error) { return DeviceRow{}, errRowShape }, true},
		{"ends", func() (DeviceRow, error) { return DeviceRow{}, io.EOF }, false},
		{"fails", func() (DeviceRow, error) { return DeviceRow{}, errors.New("malformed") }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := drain(tt.next, 10); (err != nil) != tt.wantErr {
				t.Errorf("drain = %v, want error %v", err, tt.wantErr)
			}
		})
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
			if err := drain(next, len(body)); err != nil {
				t.Fatal(err)
			}
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
			if err := drain(next, len(body)); err != nil {
				t.Fatal(err)
			}
		}
	})
}
