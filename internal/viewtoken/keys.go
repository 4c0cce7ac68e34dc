package viewtoken

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/uploadbox/uploadbox/crypto"
)

// Key file formats, like the project's other keys: one text line, with
// '#' comments allowed around it.
const (
	KeyPrefix    = "UBX-VIEWER-TOKEN-KEY-ED25519:"
	PublicPrefix = "ubx-viewer-token-pub-ed25519:"
)

// Files in the box's state directory.
const (
	// ReceiverKeyFile holds the receiver's token public key, stored at
	// enrollment.
	ReceiverKeyFile = "token.pub"
	// LocalKeyFile and LocalPublicFile are the box's own token key pair,
	// made by `uploadbox viewer token` for rigs without a reachable receiver.
	LocalKeyFile    = "viewer-local.key"
	LocalPublicFile = "viewer-local.pub"
)

// FormatPublicKey encodes pub as a "ubx-viewer-token-pub-ed25519:…" line.
func FormatPublicKey(pub ed25519.PublicKey) string { return PublicPrefix + b64.EncodeToString(pub) }

// ParsePublicKey decodes a "ubx-viewer-token-pub-ed25519:…" line.
func ParsePublicKey(s string) (ed25519.PublicKey, error) {
	data, ok := strings.CutPrefix(strings.TrimSpace(s), PublicPrefix)
	if !ok {
		return nil, fmt.Errorf("not a viewer token public key (want %s…)", PublicPrefix)
	}
	raw, err := b64.DecodeString(data)
	if err != nil || len(raw) != ed25519.PublicKeySize {
		return nil, errors.New("viewer token public key must be 32 bytes of base64url")
	}
	return ed25519.PublicKey(raw), nil
}

func formatPrivateKey(priv ed25519.PrivateKey) string {
	return KeyPrefix + b64.EncodeToString(priv.Seed())
}

// parsePrivateKey decodes a "UBX-VIEWER-TOKEN-KEY-ED25519:…" line.
func parsePrivateKey(s string) (ed25519.PrivateKey, error) {
	data, ok := strings.CutPrefix(s, KeyPrefix)
	if !ok {
		return nil, fmt.Errorf("not a viewer token signing key (want %s…)", KeyPrefix)
	}
	raw, err := b64.DecodeString(data)
	if err != nil || len(raw) != ed25519.SeedSize {
		return nil, errors.New("viewer token signing key must be a 32-byte seed in base64url")
	}
	defer clear(raw)
	return ed25519.NewKeyFromSeed(raw), nil
}

// ReadKeyFile loads a private token key, refusing a file that group or
// others can read.
func ReadKeyFile(path string) (ed25519.PrivateKey, error) {
	l, err := crypto.ReadKeyLine(path, true)
	if err != nil {
		return nil, fmt.Errorf("viewer token key: %w", err)
	}
	k, err := parsePrivateKey(l)
	if err != nil {
		return nil, fmt.Errorf("viewer token key %s: %w", path, err)
	}
	return k, nil
}

// ReadPublicKeyFile loads a token public key file.
func ReadPublicKeyFile(path string) (ed25519.PublicKey, error) {
	l, err := crypto.ReadKeyLine(path, false)
	if err != nil {
		return nil, fmt.Errorf("viewer token public key: %w", err)
	}
	k, err := ParsePublicKey(l)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return k, nil
}

// LoadOrCreateKey reads the private token key at path, making it (0600)
// on first use. If pubPath is set, the public half is written there too
// (0600) when it is missing.
func LoadOrCreateKey(path, pubPath string) (ed25519.PrivateKey, error) {
	priv, err := ReadKeyFile(path)
	if errors.Is(err, os.ErrNotExist) {
		_, fresh, gerr := ed25519.GenerateKey(rand.Reader)
		if gerr != nil {
			return nil, gerr
		}
		content := "# uploadbox viewer token signing key; keep it private\n" + formatPrivateKey(fresh) + "\n"
		if werr := crypto.WriteKeyFile(path, content, 0o600); werr != nil {
			// Another process may have made it first: use that one.
			if priv, err = ReadKeyFile(path); err != nil {
				return nil, werr
			}
		} else {
			priv, err = fresh, nil
		}
	}
	if err != nil {
		return nil, err
	}
	if pubPath != "" {
		if _, err := os.Lstat(pubPath); errors.Is(err, os.ErrNotExist) {
			line := FormatPublicKey(priv.Public().(ed25519.PublicKey)) + "\n"
			if werr := crypto.WriteKeyFile(pubPath, line, 0o600); werr != nil {
				if _, err := ReadPublicKeyFile(pubPath); err != nil {
					return nil, werr
				}
			}
		}
	}
	return priv, nil
}

// MintLocal mints a token for viewer with the box's local key in
// stateDir (made on first use), issued as IssuerLocal.
func MintLocal(stateDir, viewer string, ttl time.Duration, now time.Time) (string, error) {
	if !ValidName(viewer) {
		return "", fmt.Errorf("%w: %q", ErrBadName, viewer)
	}
	if ttl <= 0 || ttl > MaxTTL {
		return "", fmt.Errorf("%w (got %s)", ErrBadTTL, ttl)
	}
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return "", fmt.Errorf("state directory %s: %w", stateDir, err)
	}
	key, err := LoadOrCreateKey(filepath.Join(stateDir, LocalKeyFile), filepath.Join(stateDir, LocalPublicFile))
	if err != nil {
		return "", err
	}
	return Mint(key, IssuerLocal, viewer, ttl, now)
}

// LoadBoxVerifier returns a verifier that trusts the receiver's token key
// from enrollment (token.pub) for IssuerReceiver and the box's local key
// (viewer-local.pub) for IssuerLocal, whichever of them stateDir holds.
func LoadBoxVerifier(stateDir string) (*Verifier, error) {
	var keys []TrustedKey
	for _, f := range []struct{ name, issuer string }{{ReceiverKeyFile, IssuerReceiver}, {LocalPublicFile, IssuerLocal}} {
		k, err := ReadPublicKeyFile(filepath.Join(stateDir, f.name))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		keys = append(keys, TrustedKey{Issuer: f.issuer, Key: k})
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("state %s has no viewer token key (%s or %s): enroll the box or run `uploadbox viewer token` first", stateDir, ReceiverKeyFile, LocalPublicFile)
	}
	return NewVerifier(keys...), nil
}
