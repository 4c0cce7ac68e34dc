package link

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/uploadbox/uploadbox/wire"
)

// ErrNotConnected is Request while the control connection is not open.
var ErrNotConnected = errors.New("the control connection is not open")

// Request sends the receiver a request for op with params over the open
// connection and waits for its answer or ctx (give it a deadline: a
// connection lost meanwhile brings no answer).
// A refusal (an error message) is returned as a *wire.ControlError.
func (c *Client) Request(ctx context.Context, op string, params any) (wire.Response, error) {
	c.mu.Lock()
	conn := c.conn
	c.mu.Unlock()
	if conn == nil {
		return wire.Response{}, ErrNotConnected
	}
	p, err := json.Marshal(params)
	if err != nil {
		return wire.Response{}, fmt.Errorf("control request %s: %w", op, err)
	}
	id, ch := c.calls.Add()
	defer c.calls.Forget(id)
	if err := c.write(ctx, conn, wire.TypeRequest, id, wire.Request{Op: op, Params: p}); err != nil {
		return wire.Response{}, fmt.Errorf("control request %s: %w", op, err)
	}
	return wire.Await(ctx, ch)
}
