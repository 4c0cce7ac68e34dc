// Package wire holds what the box and the receiver say to each other: the
// enrollment request and response, the commit request and response, the
// refusals and their reasons, the signed receipts and the receipt key's
// format, the certificate and TLS helpers both ends use, the typed,
// versioned messages of the box's control connection (control.go), and
// the teachers' decision statements the receiver signs for the box
// (decision.go).
//
// It imports neither side. The box (uploader, agent, cmd/uploadbox)
// imports wire and never a receiver package, so that the box binary does
// not link the receiver's dependencies (tusd, the S3 client);
// TestDependencyRule holds that rule with go list -deps. The receiver's
// CA and certificate issuing stay in receiver/pki.
package wire
