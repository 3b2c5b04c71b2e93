package hsm_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"fmt"
	"testing"
	"time"

	"github.com/miekg/pkcs11"
)

func TestSumEachMatchesStdlibInOrder(t *testing.T) {
	m := open(t, 1, nil)
	key := []byte("fedcba9876543210fedcba9876543210")
	label := fmt.Sprintf("each-hmac-%d", time.Now().UnixNano())
	if err := m.ImportSecret(context.Background(), label, pkcs11.CKK_GENERIC_SECRET, key); err != nil {
		t.Fatal(err)
	}
	k, err := m.HMACKey("pkcs11:object=" + label + ";type=secret-key")
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{0, 1, 300} {
		msgs := make([][]byte, n)
		for i := range msgs {
			msgs[i] = []byte(fmt.Sprintf("message %d", i))
		}
		got, err := k.SumEach(context.Background(), msgs)
		if err != nil || len(got) != n {
			t.Fatalf("n=%d: %d MACs, %v", n, len(got), err)
		}
		for i, msg := range msgs {
			mac := hmac.New(sha256.New, key)
			mac.Write(msg)
			if want := mac.Sum(nil); !hmac.Equal(got[i], want) {
				t.Fatalf("n=%d: MAC %d is %x, stdlib %x", n, i, got[i], want)
			}
		}
	}
}
