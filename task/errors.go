package task

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/leanshim/leanshim/cgroup"
	"github.com/leanshim/leanshim/pod"
	"github.com/leanshim/leanshim/process"
)

// Errors of this package; toStatus maps them with the process sentinels.
var (
	errNotFound      = errors.New("not found")
	errAlreadyExists = errors.New("already exists")
	errInvalid       = errors.New("invalid argument")
	errPrecondition  = errors.New("failed precondition")
)

// toStatus converts an error to the ttrpc status containerd expects: it maps
// NotFound, AlreadyExists, FailedPrecondition, InvalidArgument and the
// context errors to their gRPC codes and everything else to Unknown.
// containerd turns the codes back into its errdefs classes.
//
// No handler answers Unimplemented: containerd 2.x reads Unimplemented from
// Create as "this shim speaks an older task API", downgrades its client and
// retries, and the user then sees a misleading error (core/runtime/v2
// task_manager.go). Only ttrpc answers it, for methods the shim does not
// serve. Input the shim does not support (errors.ErrUnsupported, e.g. an
// unknown stdio URI scheme) is InvalidArgument.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	// Request bytes can reach the text (a path in an os.PathError); ttrpc
	// cannot marshal a status that is not UTF-8 and would drop the
	// connection instead of answering.
	return status.Error(code(err), strings.ToValidUTF8(err.Error(), "\uFFFD"))
}

// maxSignal is the highest signal number Linux has (SIGRTMAX).
const maxSignal = 64

// noNUL refuses request strings that name files or go on a runtime's
// command line: a NUL cannot be in either, and the kernel's EINVAL for it
// would reach containerd as an unclassified error.
func noNUL(kind string, ss ...string) error {
	for _, s := range ss {
		if strings.IndexByte(s, 0) >= 0 {
			return fmt.Errorf("%s %q: contains a NUL byte: %w", kind, s, errInvalid)
		}
	}
	return nil
}

func code(err error) codes.Code {
	switch {
	case errors.Is(err, errNotFound), errors.Is(err, process.ErrNotFound), errors.Is(err, process.ErrFinished),
		errors.Is(err, cgroup.ErrNotFound):
		return codes.NotFound
	case errors.Is(err, errAlreadyExists), errors.Is(err, process.ErrAlreadyExists):
		return codes.AlreadyExists
	case errors.Is(err, errPrecondition), errors.Is(err, process.ErrInvalidState), errors.Is(err, pod.ErrState):
		return codes.FailedPrecondition
	case errors.Is(err, errInvalid), errors.Is(err, process.ErrInvalidArgument), errors.Is(err, pod.ErrInvalid),
		errors.Is(err, errors.ErrUnsupported):
		return codes.InvalidArgument
	case errors.Is(err, context.DeadlineExceeded):
		return codes.DeadlineExceeded
	case errors.Is(err, context.Canceled):
		return codes.Canceled
	}
	return codes.Unknown
}

// validID checks an id the way containerd's identifiers package does: 1-76
// characters of [A-Za-z0-9] separated by single '.', '_' or '-'. The ids
// name files in the bundle, so '/' and ".." must never get through.
func validID(kind, id string) error {
	if id == "" || len(id) > 76 {
		return fmt.Errorf("%s %q: must be 1 to 76 characters: %w", kind, id, errInvalid)
	}
	prevSep := true
	for i := 0; i < len(id); i++ {
		c := id[i]
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		sep := c == '.' || c == '_' || c == '-'
		if !alnum && !sep || sep && prevSep {
			return fmt.Errorf("%s %q: only letters and digits separated by '.', '_' or '-': %w", kind, id, errInvalid)
		}
		prevSep = sep
	}
	if prevSep {
		return fmt.Errorf("%s %q: must not end with a separator: %w", kind, id, errInvalid)
	}
	return nil
}
