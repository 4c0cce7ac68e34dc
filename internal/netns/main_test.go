package netns

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain checks that Do's goroutines and the tests' listeners end.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
