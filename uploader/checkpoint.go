package uploader

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/uploadbox/uploadbox/internal/audit"
)

// ErrCheckpointRefused means the receiver refused an audit checkpoint for
// good (malformed, not signed by this device's enrolled key, or older
// than or forked from the one it holds): sending it again cannot help.
var ErrCheckpointRefused = errors.New("the receiver refused the audit checkpoint")

// SendCheckpoint sends the box's audit checkpoint c to the receiver, over
// the same mutual-TLS client as the segments, so the receiver holds the
// head of the box's audit chain.
func (u *Uploader) SendCheckpoint(ctx context.Context, c audit.Checkpoint) error {
	body, err := json.Marshal(c)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.st.Receiver.JoinPath("/v1/audit/checkpoint").String(), bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := u.http.Do(req)
	if err != nil {
		return fmt.Errorf("send audit checkpoint: %w", err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	switch resp.StatusCode {
	case http.StatusOK:
		return nil
	case http.StatusBadRequest, http.StatusConflict, http.StatusUnprocessableEntity:
		return fmt.Errorf("%w (HTTP %d): %s", ErrCheckpointRefused, resp.StatusCode, bytes.TrimSpace(data))
	}
	return fmt.Errorf("send audit checkpoint: HTTP %d: %s", resp.StatusCode, bytes.TrimSpace(data))
}
