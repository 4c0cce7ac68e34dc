package receiver

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"net/http"
	"time"

	"github.com/uploadbox/uploadbox/crypto"
	"github.com/uploadbox/uploadbox/internal/audit"
	"github.com/uploadbox/uploadbox/internal/viewtoken"
	"github.com/uploadbox/uploadbox/receiver/devices"
	"github.com/uploadbox/uploadbox/wire"
)

func (s *Server) handleEnroll(w http.ResponseWriter, r *http.Request) {
	// refuse answers 400 and audits the attempt (coalesced per source).
	refuse := func(msg, detail string) {
		s.fails.Record(audit.Entry{Event: "device.enroll", Source: r.RemoteAddr, Outcome: "denied", Detail: detail})
		httpError(w, http.StatusBadRequest, msg)
	}
	var req EnrollRequest
	dec := json.NewDecoder(io.LimitReader(r.Body, 8192))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil || dec.More() {
		refuse(`enroll: bad request body: send {"token": …, "device_key": …, "proof": …} (uploadbox enroll does)`, "malformed request body")
		return
	}
	pub, err := crypto.ParseDevicePublicKey(req.DeviceKey)
	if err != nil {
		refuse("enroll: "+err.Error(), "malformed device key")
		return
	}
	proof, err := base64.StdEncoding.DecodeString(req.Proof)
	if err != nil || !ed25519.Verify(pub.Bytes(), wire.EnrollProof(req.Token), proof) {
		refuse("enroll: the proof is not the device key's signature over the token", "bad proof of the device key")
		return
	}
	name, err := devices.TokenName(req.Token)
	if err != nil {
		refuse("enroll: "+err.Error(), "malformed token")
		return
	}
	cert, err := s.ca.IssueDeviceFor(name, pub.Bytes(), time.Now(), s.deviceCertTTL())
	if err != nil {
		httpError(w, http.StatusInternalServerError, "enroll: issue certificate")
		return
	}
	if err := s.devices.Enroll(req.Token, pub.Bytes(), cert.SerialNumber.String(), r.RemoteAddr); err != nil {
		switch {
		case errors.Is(err, devices.ErrKeyEnrolled):
			// Only the holder of a valid token and of the key gets here.
			httpError(w, http.StatusConflict, "enroll: "+devices.ErrKeyEnrolled.Error())
		case errors.Is(err, devices.ErrLocked):
			httpError(w, http.StatusLocked, "enrollment refused")
		default:
			// The reason stays in the audit log; the client learns only that
			// it failed, the same for every name (see devices.Enroll).
			httpError(w, http.StatusForbidden, "enrollment refused")
		}
		return
	}
	resp := EnrollResponse{
		Certificate: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})),
		CA:          string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.ca.Cert.Raw})),
		ReceiptKey:  wire.FormatReceiptKey(s.receiptKey.Public().(ed25519.PublicKey)),
		TokenKey:    viewtoken.FormatPublicKey(s.tokenKey.Public().(ed25519.PublicKey)),
	}
	for _, rc := range s.recipients {
		resp.Recipients = append(resp.Recipients, rc.String())
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(resp)
}
