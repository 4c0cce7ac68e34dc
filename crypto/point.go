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
	// x² = (y² − 1) / (d·y² + 1)
	y2 := mulMod(y, y)
	u := new(big.Int).Sub(y2, edOne)
	v := new(big.Int).Add(mulMod(edD, y2), edOne)
	x2 := mulMod(u, new(big.Int).ModInverse(v, edP))
	x := new(big.Int).ModSqrt(x2, edP)
	if x == nil {
		return errPointCurve
	}
	if x.Sign() == 0 && sign == 1 {
		return errPointEncoding
	}
	// The group is the prime-order subgroup times 8 small-order points: P
	// has small order exactly when [8]P is the identity (0, 1).
	for range 3 {
		x, y = edDouble(x, y)
	}
	if x.Sign() == 0 && y.Cmp(edOne) == 0 {
		return errPointOrder
	}
	return nil
}

func mulMod(a, b *big.Int) *big.Int {
	r := new(big.Int).Mul(a, b)
	return r.Mod(r, edP)
}

// edDouble doubles the affine point (x, y) on −x² + y² = 1 + d·x²·y²:
// x' = 2xy / (1 + d·x²·y²), y' = (y² + x²) / (1 − d·x²·y²). The formula is
// complete (d is not a square), so no denominator is ever zero.
func edDouble(x, y *big.Int) (*big.Int, *big.Int) {
	xy := mulMod(x, y)
	dxy2 := mulMod(edD, mulMod(xy, xy))
	nx := mulMod(new(big.Int).Lsh(xy, 1), new(big.Int).ModInverse(new(big.Int).Add(dxy2, edOne), edP))
	den := new(big.Int).Sub(edOne, dxy2)
	den.Mod(den, edP)
	ny := mulMod(new(big.Int).Add(mulMod(y, y), mulMod(x, x)), new(big.Int).ModInverse(den, edP))
	return nx, ny
}
