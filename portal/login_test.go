package portal

import (
	"context"
	"errors"
	"net"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/credfactory/credfactory/store"
	"github.com/valyala/fasthttp"
)

type loginAnswer struct {
	status int
	retry  string
	page   string // the page, the name as typed replaced by NAME
}

func loginHarness(t *testing.T) (*Portal, *atomic.Int64, *time.Time, func(ip, name, password string) loginAnswer) {
	t.Helper()
	ctx := context.Background()
	st, err := store.Open(ctx, "sqlite://"+filepath.Join(t.TempDir(), "registry.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if _, err := st.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	hashes := new(atomic.Int64)
	orig := checkPassword
	checkPassword = func(hash, password string) (bool, error) {
		hashes.Add(1)
		return orig(hash, password)
	}
	t.Cleanup(func() { checkPassword = orig })
	p := New(Config{}, st, nil, nil, nil, nil)
	now := time.Unix(1_700_000_000, 0)
	p.now = func() time.Time { return now }
	login := func(ip, name, password string) loginAnswer {
		t.Helper()
		var req fasthttp.Request
		req.Header.SetMethod("POST")
		req.SetRequestURI("https://portal.example/login")
		req.Header.SetContentType("application/x-www-form-urlencoded")
		req.SetBodyString(url.Values{"name": {name}, "password": {password}}.Encode())
		rc := &fasthttp.RequestCtx{}
		rc.Init(&req, &net.TCPAddr{IP: net.ParseIP(ip), Port: 50000}, nil)
		if err := p.pageLoginPost(rc); err != nil {
			t.Fatal(err)
		}
		return loginAnswer{rc.Response.StatusCode(), string(rc.Response.Header.Peek("Retry-After")),
			strings.ReplaceAll(string(rc.Response.Body()), name, "NAME")}
	}
	return p, hashes, &now, login
}

// TestLoginAnswersAlike: an unknown name, a wrong password, a disabled
// account (with its right password or not) and a slowed name are told
// apart by nothing: status, code, message, Retry-After and the work done
// (one argon2 hash, or none when slowed) are the same.
func TestLoginAnswersAlike(t *testing.T) {
	p, hashes, _, login := loginHarness(t)
	ctx := context.Background()
	const right = "a long and unguessable one"
	for _, name := range []string{"alice", "dora"} {
		if _, err := p.CreateStakeholder(ctx, name, store.RoleSubscriber, right, ""); err != nil {
			t.Fatal(err)
		}
	}
	dora, err := p.st.StakeholderBy(ctx, "name", "dora")
	if err != nil {
		t.Fatal(err)
	}
	if err := p.st.DisableStakeholder(ctx, dora.ID, "test", time.Now()); err != nil {
		t.Fatal(err)
	}
	tests := []struct{ name, login, password string }{
		{"unknown name", "nobody", right},
		{"wrong password", "alice", "not the password at all"},
		{"disabled account, right password", "dora", right},
		{"disabled account, wrong password", "dora", "not the password at all"},
	}
	// Each from its own source: first the answers to a first attempt,
	// then to the attempt after three failures (slowed).
	first, slowed := map[string]loginAnswer{}, map[string]loginAnswer{}
	for i, tt := range tests {
		ip := "192.0.2." + strconv.Itoa(i+1)
		hashes.Store(0)
		first[tt.name] = login(ip, tt.login, tt.password)
		if n := hashes.Load(); n != 1 {
			t.Errorf("%s: %d password hashes, want 1", tt.name, n)
		}
		login(ip, tt.login, tt.password)
		login(ip, tt.login, tt.password)
		hashes.Store(0)
		slowed[tt.name] = login(ip, tt.login, tt.password)
		if n := hashes.Load(); n != 0 {
			t.Errorf("%s slowed: %d password hashes, want none", tt.name, n)
		}
	}
	want, wantSlowed := first[tests[0].name], slowed[tests[0].name]
	if want.status != 401 || wantSlowed.status != 429 || wantSlowed.retry == "" {
		t.Fatalf("unknown name: %d then %d (Retry-After %q), want 401 then 429 with Retry-After", want.status, wantSlowed.status, wantSlowed.retry)
	}
	for _, tt := range tests[1:] {
		if got := first[tt.name]; got != want {
			t.Errorf("%s: answered %d %q, the unknown name %d %q", tt.name, got.status, got.retry, want.status, want.retry)
		}
		if got := slowed[tt.name]; got != wantSlowed {
			t.Errorf("%s slowed: answered %d %q, the unknown name %d %q", tt.name, got.status, got.retry, wantSlowed.status, wantSlowed.retry)
		}
	}
}

// TestLoginSlowsButNeverLocksOut: a guesser who keeps failing at a name is
// slowed ever more from its own address and somewhat from everywhere, but
// the rightful user's right password is never refused once the wait, at
// most 30 s from another address, has passed.
func TestLoginSlowsButNeverLocksOut(t *testing.T) {
	p, _, now, login := loginHarness(t)
	const right = "a long and unguessable one"
	if _, err := p.CreateStakeholder(context.Background(), "alice", store.RoleSubscriber, right, ""); err != nil {
		t.Fatal(err)
	}
	// The guesser tries 40 times from one address, each time as soon as
	// it may.
	var waited time.Duration
	for tries := 0; tries < 40; {
		a := login("203.0.113.9", "alice", "guess number "+strconv.Itoa(tries))
		switch a.status {
		case 401:
			tries++
		case 429:
			secs, _ := strconv.Atoi(a.retry)
			*now = now.Add(time.Duration(secs) * time.Second)
			waited += time.Duration(secs) * time.Second
		default:
			t.Fatalf("guess: %d", a.status)
		}
	}
	if waited < time.Hour {
		t.Errorf("40 guesses from one address took %v of waiting, want hours", waited)
	}
	// The guesser goes on until it is held back right now.
	for i := 0; login("203.0.113.9", "alice", "one more guess").status != 429; i++ {
		if i == 20 {
			t.Fatal("20 more failures in a row and the guesser is not held back")
		}
	}
	// The rightful user, elsewhere: at most one wait of 30 s, then in.
	a := login("198.51.100.7", "alice", right)
	if a.status == 429 {
		if secs, _ := strconv.Atoi(a.retry); secs < 1 || secs > 30 {
			t.Fatalf("the rightful user is told to wait %q s, want at most 30", a.retry)
		}
		secs, _ := strconv.Atoi(a.retry)
		*now = now.Add(time.Duration(secs) * time.Second)
		a = login("198.51.100.7", "alice", right)
	}
	if a.status != 303 {
		t.Fatalf("the right password after the wait: %d, want 303 to the devices (no lock refuses it)", a.status)
	}
}

// TestPasswordRule: length alone is not enough.
func TestPasswordRule(t *testing.T) {
	tests := []struct {
		name, account, password string
		ok                      bool
	}{
		{"too short", "alice", "k8#Lq2!vZ", false},
		{"one character repeated", "alice", "aaaaaaaaaaaa", false},
		{"two characters alternating", "alice", "abababababab", false},
		{"a repeated short pattern", "alice", "abc1abc1abc1abc1", false},
		{"an ascending run", "alice", "abcdefghijklm", false},
		{"a descending run of digits", "alice", "987654321098", false},
		{"a common password", "alice", "qwertyuiopasdfghjkl", false},
		{"a common password with digits around it", "alice", "2024password123!", false},
		{"a common password capitalised", "alice", "Iloveyou1234", false},
		{"a keyboard walk", "alice", "1qaz2wsx3edc", false},
		{"the account name", "longaccountname", "LongAccountName2024", false},
		{"over the length bound", "alice", strings.Repeat("pass phrase ", 100), false},
		{"a passphrase", "alice", "correct horse battery staple", true},
		{"random characters", "alice", "k8#Lq2!vZp0w", true},
		{"a long sentence in another script", "alice", "Съешь же ещё этих мягких булок", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckPasswordRule(tt.account, tt.password)
			if (err == nil) != tt.ok {
				t.Fatalf("CheckPasswordRule(%q): %v, want ok=%v", tt.password, err, tt.ok)
			}
			if err != nil && !errors.Is(err, ErrWeakPassword) {
				t.Fatalf("%v is not ErrWeakPassword", err)
			}
		})
	}
	if _, err := HashPassword("aaaaaaaaaaaa"); err == nil {
		t.Fatal("HashPassword takes twelve a's")
	}
}

// TestClaimCodeRule: claim codes are printable and not guessable.
func TestClaimCodeRule(t *testing.T) {
	tests := []struct {
		code string
		ok   bool
	}{
		{"\x00\x00\x00\x00\x00\x00", false},
		{"abc\tdef1234", false},
		{"label\x7f1234", false},
		{"\xff\xfe\xfdabcdef", false},
		{"000000", false},
		{"123456", false},
		{"12345678", false},
		{"aaaaaaaaaa", false},
		{"abcabcabcabc", false},
		{"93817264", false}, // 8 random digits: 27 bits
		{"4930281746", true},
		{"label-1", true},
		{"K7QX-9RMT", true},
		{"CODE-AAAAAA", true},
	}
	for _, tt := range tests {
		if got := claimCodeProblem(tt.code); (got == "") != tt.ok {
			t.Errorf("claimCodeProblem(%q) = %q, want ok=%v", tt.code, got, tt.ok)
		}
	}
}

// TestUploadRefusesBadClaimCodes: each bad claim code is a per-row
// refusal, and the other rows are stored.
func TestUploadRefusesBadClaimCodes(t *testing.T) {
	p, _, _, _ := loginHarness(t)
	maker, err := p.CreateStakeholder(context.Background(), "maker", store.RoleManufacturer, "a long and unguessable one", "")
	if err != nil {
		t.Fatal(err)
	}
	rows, err := CSVRows(strings.NewReader("deviceId,claimCode\nnul-1,\x00\x00\x00\x00\x00\x00\nseq-1,123456789\nplain-1,\n"))
	if err != nil {
		t.Fatal(err)
	}
	report, err := p.Upload(context.Background(), Principal{Stakeholder: maker, Via: "api-key"}, rows)
	if err != nil {
		t.Fatal(err)
	}
	if report.Inserted != 1 || len(report.Rejected) != 2 ||
		!strings.Contains(report.Rejected[0].Error, "printable") || !strings.Contains(report.Rejected[1].Error, "too easy to guess") {
		t.Fatalf("report %+v", report)
	}
}
