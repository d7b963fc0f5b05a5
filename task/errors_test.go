package task

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/leanshim/leanshim/process"
)

// TestToStatusCodes: each error class reaches containerd as its code, and
// nothing a request can cause comes back Unimplemented, which containerd
// 2.x takes for an old task API (it downgrades and retries Create).
func TestToStatusCodes(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want codes.Code
	}{
		{"unknown stdio scheme", fmt.Errorf("open stdio: stdio uri %q: scheme %q: %w", "nope://x", "nope", errors.ErrUnsupported), codes.InvalidArgument},
		{"invalid argument", fmt.Errorf("x: %w", process.ErrInvalidArgument), codes.InvalidArgument},
		{"not found", fmt.Errorf("x: %w", process.ErrNotFound), codes.NotFound},
		{"already exists", fmt.Errorf("x: %w", errAlreadyExists), codes.AlreadyExists},
		{"invalid state", fmt.Errorf("x: %w", process.ErrInvalidState), codes.FailedPrecondition},
		{"deadline", fmt.Errorf("x: %w", context.DeadlineExceeded), codes.DeadlineExceeded},
		{"anything else", errors.New("runc create failed"), codes.Unknown},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st, _ := status.FromError(toStatus(tc.err))
			if st.Code() != tc.want {
				t.Errorf("toStatus(%v) code %s, want %s", tc.err, st.Code(), tc.want)
			}
		})
	}
}
