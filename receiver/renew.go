package receiver

import (
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"time"

	"github.com/uploadbox/uploadbox/receiver/devices"
	"github.com/uploadbox/uploadbox/receiver/pki"
	"github.com/uploadbox/uploadbox/wire"
)

// Bounds of ServerConfig.DeviceCertTTL.
const (
	MinDeviceCertTTL = 10 * time.Second
	MaxDeviceCertTTL = 10 * 365 * 24 * time.Hour
)

// deviceCertTTL is the lifetime of the device certificates this server
// issues (enrollment and renewal).
func (s *Server) deviceCertTTL() time.Duration {
	if s.cfg.DeviceCertTTL == 0 {
		return pki.DeviceLifetime
	}
	return s.cfg.DeviceCertTTL
}

// checkDeviceCertTTL validates ServerConfig.DeviceCertTTL.
func checkDeviceCertTTL(d time.Duration) error {
	if d != 0 && (d < MinDeviceCertTTL || d > MaxDeviceCertTTL) {
		return fmt.Errorf("serve: --device-cert-ttl %s: use %s to %s", d, MinDeviceCertTTL, MaxDeviceCertTTL)
	}
	return nil
}

// handleRenew issues a fresh certificate for the key of the device whose
// certificate this connection presents (POST /v1/renew). The presented
// certificate stays valid until it expires, so requests on connections
// made with it go on (devices.Registry.Renew).
func (s *Server) handleRenew(w http.ResponseWriter, r *http.Request) {
	d := r.Context().Value(deviceKey).(*devices.Device)
	presented := r.TLS.PeerCertificates[0]
	cert, err := s.ca.IssueDeviceFor(d.Name, d.PublicKey, time.Now(), s.deviceCertTTL())
	if err != nil {
		httpError(w, http.StatusInternalServerError, "renew: issue certificate")
		return
	}
	old := devices.Cert{Serial: presented.SerialNumber.String(), NotAfter: presented.NotAfter}
	if err := s.devices.Renew(d.Name, old, devices.Cert{Serial: cert.SerialNumber.String(), NotAfter: cert.NotAfter}, r.RemoteAddr); err != nil {
		s.log.Warn("renewal refused", "device", d.Name, "err", err)
		writeRefusal(w, http.StatusForbidden, Refusal{Error: "renew: " + err.Error(), Reason: ReasonDeviceInactive})
		return
	}
	s.log.Info("device certificate renewed", "device", d.Name, "serial", cert.SerialNumber.String(), "not_after", cert.NotAfter)
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(wire.RenewResponse{Certificate: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}))})
}
