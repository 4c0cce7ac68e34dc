package wire

import (
	"crypto/x509"
	"time"
)

// RenewPath is the receiver's certificate renewal endpoint: a POST with no
// body over the box's mutual TLS connection, answered with RenewResponse:
// a new certificate for the same device key.
const RenewPath = "/v1/renew"

// RenewResponse is the answer of RenewPath.
type RenewResponse struct {
	Certificate string `json:"certificate"` // PEM
}

// DeviceCertBackdate is how far before its issue a device certificate's
// NotBefore lies, for boxes whose clocks lag.
const DeviceCertBackdate = time.Hour

// RenewAt is when a box renews its device certificate: at two thirds of
// its lifetime, counted from its issue (NotBefore + DeviceCertBackdate).
func RenewAt(c *x509.Certificate) time.Time {
	issued := c.NotBefore.Add(DeviceCertBackdate)
	if !issued.Before(c.NotAfter) { // not one of ours: renew at once
		return c.NotBefore
	}
	return issued.Add(c.NotAfter.Sub(issued) * 2 / 3)
}
