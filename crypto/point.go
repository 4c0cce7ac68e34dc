package crypto

import (
	"errors"
	"math/big"
	"slices"
)

// Why device public keys are checked: Go's crypto/ed25519 verifies
// cofactorless ([S]B = R + [k]A) and accepts any point as A, including
// the eight of small order. For such an A, [k]A is one of eight points
// whatever the message, so a signature made without any private key
// verifies for every message (with A = the identity, R = B and S = 1 always
// do). A device id must never be such a key.

var (
	errPointEncoding = errors.New("is not a canonical Ed25519 point encoding (y ≥ 2^255−19, or x = 0 with the sign bit set)")
	errPointCurve    = errors.New("is not a point on the Ed25519 curve")
	errPointOrder    = errors.New("is a point of small order, for which forged signatures verify: not a real device key")
)

// The Ed25519 field prime and the curve constant d = −121665/121666.
var (
	edP   = new(big.Int).Sub(new(big.Int).Lsh(big.NewInt(1), 255), big.NewInt(19))
	edD   = new(big.Int).Mod(new(big.Int).Mul(big.NewInt(-121665), new(big.Int).ModInverse(big.NewInt(121666), edP)), edP)
	edOne = big.NewInt(1)
	// edHalf is (p − 1) / 2: w^edHalf is 1 exactly for the non-zero squares.
	edHalf = new(big.Int).Rsh(edP, 1)
)

// checkDevicePoint refuses an Ed25519 public key encoding that is not the
// canonical encoding (RFC 8032 §5.1.3) of a curve point, or is a point of
// small order (1, 2, 4 or 8). Public keys are public: this runs in
// variable time with math/big.
func checkDevicePoint(enc []byte) error {
	if len(enc) != 32 {
		return errPointEncoding
	}
	le := slices.Clone(enc)
	sign := le[31] >> 7
	le[31] &= 0x7f
	slices.Reverse(le)
	y := new(big.Int).SetBytes(le)
	if y.Cmp(edP) >= 0 {
		return errPointEncoding
	}
	// On −x² + y² = 1 + d·x²·y², x² = (y² − 1) / (d·y² + 1); the
	// denominator is never 0 (−1/d is not a square). A point exists when
	// that is a square, that is when (y² − 1)·(d·y² + 1) is.
	num, den := xSquared(y, edOne)
	if num.Sign() == 0 && sign == 1 {
		return errPointEncoding // x = 0 has no negative
	}
	if w := mulMod(num, den); w.Sign() != 0 && new(big.Int).Exp(w, edHalf, edP).Cmp(edOne) != 0 {
		return errPointCurve
	}
	// The group is the prime-order subgroup times 8 small-order points: P
	// has small order exactly when [8]P is the identity, the only point
	// with y = 1. Doubling depends on y alone (x² is a function of y):
	// y(2P) = (x² + y²) / (2 + x² − y²); with y = Y/Z this needs no
	// inverse.
	yn, yd := y, new(big.Int).Set(edOne)
	for range 3 {
		num, den := xSquared(yn, yd) // x² = num/den
		y2, z2 := mulMod(yn, yn), mulMod(yd, yd)
		a := mulMod(num, z2) // x²·den·Z²
		b := mulMod(y2, den) // y²·den·Z²
		dz2 := mulMod(den, z2)
		yn = new(big.Int).Add(a, b)
		yn.Mod(yn, edP)
		yd = new(big.Int).Add(new(big.Int).Lsh(dz2, 1), a)
		yd.Sub(yd, b)
		yd.Mod(yd, edP)
	}
	if yn.Cmp(yd) == 0 {
		return errPointOrder
	}
	return nil
}

// xSquared returns x² = num/den for the point with y = yn/yd:
// num = yn² − yd², den = d·yn² + yd² (mod p).
func xSquared(yn, yd *big.Int) (num, den *big.Int) {
	y2, z2 := mulMod(yn, yn), mulMod(yd, yd)
	num = new(big.Int).Sub(y2, z2)
	num.Mod(num, edP)
	den = new(big.Int).Add(mulMod(edD, y2), z2)
	den.Mod(den, edP)
	return num, den
}

func mulMod(a, b *big.Int) *big.Int {
	r := new(big.Int).Mul(a, b)
	return r.Mod(r, edP)
}
