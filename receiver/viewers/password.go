package viewers

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"unicode"

	"golang.org/x/crypto/argon2"
)

// Policy is an organisation's password policy.
type Policy string

// The policies.
const (
	// Medium: at least 12 characters from at least 2 classes.
	Medium Policy = "medium"
	// High: at least 16 characters from at least 3 classes.
	High Policy = "high"
)

// ErrWeakPassword is wrapped by every policy refusal.
var ErrWeakPassword = errors.New("password does not meet the password policy")

// MaxPasswordLength bounds what is hashed.
const MaxPasswordLength = 1024

// ParsePolicy accepts "medium" or "high".
func ParsePolicy(s string) (Policy, error) {
	switch p := Policy(strings.ToLower(s)); p {
	case Medium, High:
		return p, nil
	}
	return "", fmt.Errorf("password policy %q: use medium or high", s)
}

func (p Policy) rule() (minLen, minClasses int) {
	if p == High {
		return 16, 3
	}
	return 12, 2
}

// String describes the policy for error messages and help.
func (p Policy) String() string {
	n, c := p.rule()
	return fmt.Sprintf("%s (at least %d characters from at least %d of: lower case, upper case, digits, symbols)", string(p), n, c)
}

// Check reports whether password satisfies the policy.
func (p Policy) Check(password string) error {
	minLen, minClasses := p.rule()
	n := len([]rune(password))
	if n > MaxPasswordLength {
		return fmt.Errorf("%w: longer than %d characters", ErrWeakPassword, MaxPasswordLength)
	}
	if n < minLen {
		return fmt.Errorf("%w %s: it has %d characters", ErrWeakPassword, p, n)
	}
	if c := classes(password); c < minClasses {
		return fmt.Errorf("%w %s: it uses %d classes", ErrWeakPassword, p, c)
	}
	return nil
}

func classes(s string) int {
	var lower, upper, digit, symbol int
	for _, r := range s {
		switch {
		case unicode.IsLower(r):
			lower = 1
		case unicode.IsUpper(r):
			upper = 1
		case unicode.IsDigit(r):
			digit = 1
		default:
			symbol = 1
		}
	}
	return lower + upper + digit + symbol
}

// GeneratePassword returns a random 24-character password from crypto/rand
// that satisfies High (and so Medium).
func GeneratePassword() (string, error) {
	const (
		lower  = "abcdefghijkmnopqrstuvwxyz"
		upper  = "ABCDEFGHJKLMNPQRSTUVWXYZ"
		digits = "23456789"
		symbol = "-_.:+=!%"
		all    = lower + upper + digits + symbol
	)
	for {
		b := make([]byte, 24)
		for i := range b {
			r, err := randIndex(len(all))
			if err != nil {
				return "", err
			}
			b[i] = all[r]
		}
		// Rejection instead of forcing positions keeps every position uniform.
		if s := string(b); strings.ContainsAny(s, lower) && strings.ContainsAny(s, upper) && strings.ContainsAny(s, digits) && strings.ContainsAny(s, symbol) {
			return s, nil
		}
	}
}

func randIndex(n int) (int, error) {
	var b [1]byte
	limit := 256 - 256%n
	for {
		if _, err := rand.Read(b[:]); err != nil {
			return 0, err
		}
		if int(b[0]) < limit {
			return int(b[0]) % n, nil
		}
	}
}

// Params are argon2id's cost parameters.
type Params struct {
	Time    uint32 // passes
	Memory  uint32 // KiB
	Threads uint8
}

// DefaultParams: 3 passes over 64 MiB with 2 lanes.
var DefaultParams = Params{Time: 3, Memory: 64 << 10, Threads: 2}

// Bounds on parameters read back from a stored hash, so a damaged record
// cannot make one login take unbounded memory or time.
const (
	maxMemory  = 1 << 20 // 1 GiB in KiB
	maxTime    = 16
	saltLen    = 16
	keyLen     = 32
	hashPrefix = "$argon2id$v=19$"
)

var b64 = base64.RawStdEncoding.Strict()

// hashPassword returns the PHC string of an argon2id hash of password
// with a random salt: $argon2id$v=19$m=…,t=…,p=…$salt$hash.
func hashPassword(password string, p Params) (string, error) {
	salt := make([]byte, saltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", err
	}
	key := argon2.IDKey([]byte(password), salt, p.Time, p.Memory, p.Threads, keyLen)
	return fmt.Sprintf("%sm=%d,t=%d,p=%d$%s$%s", hashPrefix, p.Memory, p.Time, p.Threads, b64.EncodeToString(salt), b64.EncodeToString(key)), nil
}

// checkPassword compares password with an encoded hash in constant time.
func checkPassword(password, encoded string) (bool, error) {
	rest, ok := strings.CutPrefix(encoded, hashPrefix)
	parts := strings.Split(rest, "$")
	if !ok || len(parts) != 3 {
		return false, errors.New("stored password hash is not an argon2id PHC string")
	}
	var p Params
	if _, err := fmt.Sscanf(parts[0], "m=%d,t=%d,p=%d", &p.Memory, &p.Time, &p.Threads); err != nil {
		return false, fmt.Errorf("stored password hash parameters %q: %w", parts[0], err)
	}
	if p.Memory < 8 || p.Memory > maxMemory || p.Time < 1 || p.Time > maxTime || p.Threads < 1 {
		return false, fmt.Errorf("stored password hash parameters %q are out of range", parts[0])
	}
	salt, err1 := b64.DecodeString(parts[1])
	want, err2 := b64.DecodeString(parts[2])
	if err1 != nil || err2 != nil || len(salt) < 8 || len(want) < 16 {
		return false, errors.New("stored password hash has a bad salt or key")
	}
	got := argon2.IDKey([]byte(password), salt, p.Time, p.Memory, p.Threads, uint32(len(want)))
	return subtle.ConstantTimeCompare(got, want) == 1, nil
}
