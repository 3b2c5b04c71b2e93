package portal

import (
	_ "embed"
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

//go:embed common-passwords.txt
var commonPasswordsText string

// commonPasswords is the embedded list, lower case.
var commonPasswords = func() map[string]bool {
	m := map[string]bool{}
	for _, l := range strings.Split(commonPasswordsText, "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			m[strings.ToLower(l)] = true
		}
	}
	return m
}()

// MaxPasswordLength bounds what argon2 is asked to hash.
const MaxPasswordLength = 1024

// minDistinct is the fewest different characters a password may have.
const minDistinct = 5

// ErrWeakPassword is returned (wrapped, with the reason) for a password
// the rule refuses.
var ErrWeakPassword = errors.New("password refused")

// CheckPasswordRule applies NIST SP 800-63B §5.1.1.2: at least
// MinPasswordLength characters, and not a commonly used, expected or
// compromised value: not on the embedded list of the most common
// passwords (nor such a password with digits or symbols around it), not
// repetitive or sequential ("aaaaaaaaaaaa", "abcabcabcabc", "123456789012"),
// and not the account name. Composition rules (a digit, a capital) are
// deliberately not imposed, as the same section advises.
func CheckPasswordRule(name, password string) error {
	n := utf8.RuneCountInString(password)
	switch {
	case n < MinPasswordLength:
		return fmt.Errorf("%w: it needs at least %d characters", ErrWeakPassword, MinPasswordLength)
	case len(password) > MaxPasswordLength:
		return fmt.Errorf("%w: it may have at most %d bytes", ErrWeakPassword, MaxPasswordLength)
	}
	lower := strings.ToLower(password)
	stem := strings.TrimFunc(lower, func(r rune) bool { return !unicode.IsLetter(r) })
	if commonPasswords[lower] || commonPasswords[stem] || commonPasswords[strings.ReplaceAll(lower, " ", "")] {
		return fmt.Errorf("%w: it is one of the most common passwords", ErrWeakPassword)
	}
	if name = strings.ToLower(strings.TrimSpace(name)); name != "" && (lower == name || stem == name) {
		return fmt.Errorf("%w: it is the account name", ErrWeakPassword)
	}
	distinct := map[rune]bool{}
	for _, r := range lower {
		distinct[r] = true
	}
	if len(distinct) < minDistinct {
		return fmt.Errorf("%w: it repeats too few characters (at least %d different ones)", ErrWeakPassword, minDistinct)
	}
	if sequential([]rune(lower)) {
		return fmt.Errorf("%w: it is a sequence or a repeated pattern", ErrWeakPassword)
	}
	return nil
}

// sequential reports a run like "abcdefghijkl", "987654321098" or
// "qwertyqwerty": every step is +1, -1 or a repeat of the pattern a few
// characters back, but for a slip or two in a long string. A pattern must
// repeat at least twice over to count as one.
func sequential(rs []rune) bool {
	slips := func(steps int) int { return min(2, steps/5) }
	for period := 1; period <= 4 && len(rs) >= 2*period+2; period++ {
		odd := 0
		for i := period; i < len(rs); i++ {
			if rs[i] != rs[i-period] {
				odd++
			}
		}
		if odd <= slips(len(rs)-period) {
			return true
		}
	}
	odd := 0
	for i := 1; i < len(rs); i++ {
		if d := rs[i] - rs[i-1]; d != 1 && d != -1 {
			odd++
		}
	}
	return len(rs) > 2 && odd <= slips(len(rs)-1)
}
