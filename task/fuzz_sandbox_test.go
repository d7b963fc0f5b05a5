package task

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/containerd/ttrpc"
	"github.com/gogo/protobuf/proto"
	gogotypes "github.com/gogo/protobuf/types"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/leanshim/leanshim/proto/runtimeoptions"
	"github.com/leanshim/leanshim/proto/taskapi"
)

// The fuzz target runs as root on the machine itself, and a Create names
// files, mounts and programs. fuzzSandbox stands between the ttrpc server and
// the Service: once a request is decoded it maps the paths fuzz inputs spell
// under sandboxRoot into a directory of the test's own, and refuses what
// would reach outside it, with PermissionDenied and a message starting with
// sandboxRefusal. Everything else reaches the handler as the fuzzer wrote it.
const (
	sandboxRoot    = "/sandbox"
	sandboxRefusal = "fuzz sandbox: "
)

// fuzzWaitTimeout bounds a Wait: the fixture's processes run until they are
// killed, so a Wait for one ends with DeadlineExceeded.
const fuzzWaitTimeout = 20 * time.Millisecond

type fuzzSandbox struct {
	dir string // what sandboxRoot maps to; holds no symlinks
}

// intercept is the server's ttrpc interceptor: it confines the request as
// the handler decodes it, and gives Wait its short deadline.
func (sb fuzzSandbox) intercept(ctx context.Context, u ttrpc.Unmarshaler, info *ttrpc.UnaryServerInfo, m ttrpc.Method) (any, error) {
	method := path.Base(info.FullMethod)
	if method == "Wait" {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, fuzzWaitTimeout)
		defer cancel()
	}
	resp, err := m(ctx, func(v any) error {
		if err := u(v); err != nil {
			return err
		}
		if err := sb.confine(method, v); err != nil {
			return status.Error(codes.PermissionDenied, sandboxRefusal+err.Error())
		}
		return nil
	})
	return resp, err
}

// confine rewrites or refuses one decoded request. Only State may name the
// sentinel: it belongs to the harness, which checks it after every input.
func (sb fuzzSandbox) confine(method string, v any) error {
	if r, ok := v.(interface{ GetId() string }); ok && r.GetId() == fuzzSentinel && method != "State" {
		return errors.New("the sentinel container is the harness's")
	}
	switch r := v.(type) {
	case *taskapi.CreateTaskRequest:
		return sb.confineCreate(r)
	case *taskapi.ExecProcessRequest:
		return sb.confineStdio(&r.Stdin, &r.Stdout, &r.Stderr)
	}
	// The other requests name no host files the shim opens: Checkpoint's
	// paths only go to the (fake) runtime, and its work path is only read.
	return nil
}

func (sb fuzzSandbox) confineCreate(r *taskapi.CreateTaskRequest) error {
	if len(r.Rootfs) > 0 {
		return errors.New("no rootfs mounts: they would be mounts on the host")
	}
	var err error
	if r.Bundle, err = sb.path(r.Bundle); err != nil {
		return err
	}
	if err := sb.confineStdio(&r.Stdin, &r.Stdout, &r.Stderr); err != nil {
		return err
	}
	return sb.confineOptions(r.Options)
}

// path maps a path under sandboxRoot into the sandbox and refuses any other
// path; "" stays "". The check is lexical, which is enough because nothing
// in the sandbox is a symlink.
func (sb fuzzSandbox) path(p string) (string, error) {
	if p == "" {
		return "", nil
	}
	rest, ok := strings.CutPrefix(p, sandboxRoot)
	if !ok || rest != "" && rest[0] != '/' {
		return "", fmt.Errorf("path %q is not under %s", p, sandboxRoot)
	}
	mapped := sb.dir + rest
	if !sb.inside(mapped) {
		return "", fmt.Errorf("path %q leaves %s", p, sandboxRoot)
	}
	return mapped, nil
}

func (sb fuzzSandbox) inside(p string) bool {
	c := filepath.Clean(p)
	return c == sb.dir || strings.HasPrefix(c, sb.dir+"/")
}

func (sb fuzzSandbox) confineStdio(streams ...*string) error {
	for _, s := range streams {
		var err error
		if *s, err = sb.stream(*s); err != nil {
			return err
		}
	}
	return nil
}

// stream maps one stdio stream the way stdio.Open reads it: a path, or a
// URI whose path it opens (fifo://, file://). binary:// runs a program.
func (sb fuzzSandbox) stream(s string) (string, error) {
	if !strings.Contains(s, "://") {
		return sb.path(s)
	}
	if strings.HasPrefix(s, "binary://") {
		return "", errors.New("no binary:// loggers: they run host programs")
	}
	u, err := url.Parse(s)
	if err != nil || u.Path == "" {
		return s, nil // stdio.Open refuses it, or opens "", before it opens anything
	}
	if u.Path, err = sb.path(u.Path); err != nil {
		return "", err
	}
	u.RawPath = ""
	out := u.String()
	// stdio.Open must take the same branch for out as for s, and what it
	// parses back must still be inside.
	back, err := url.Parse(out)
	if err != nil || !strings.Contains(out, "://") || strings.HasPrefix(out, "file://") != strings.HasPrefix(s, "file://") ||
		strings.HasPrefix(out, "binary://") || !sb.inside(back.Path) {
		return "", fmt.Errorf("stdio uri %q does not map cleanly", s)
	}
	return out, nil
}

// confineOptions maps a runtime options file into the sandbox and refuses
// any runtime binary but "runc", which the harness's PATH makes the fake.
func (sb fuzzSandbox) confineOptions(a *gogotypes.Any) error {
	if a == nil {
		return nil
	}
	if strings.TrimPrefix(a.TypeUrl, "type.googleapis.com/") == proto.MessageName(&runtimeoptions.Options{}) {
		var o runtimeoptions.Options
		if proto.Unmarshal(a.Value, &o) != nil {
			return nil // decodeOptions refuses it the same way
		}
		if o.ConfigPath != "" {
			var err error
			if o.ConfigPath, err = sb.path(o.ConfigPath); err != nil {
				return err
			}
			if a.Value, err = proto.Marshal(&o); err != nil {
				return err
			}
		}
	}
	o, err := decodeOptions(a)
	if err != nil {
		return nil // Create refuses it the same way, before it runs anything
	}
	if o.BinaryName != "" && o.BinaryName != "runc" {
		return fmt.Errorf("runtime %q: only the fake runc runs here", o.BinaryName)
	}
	return nil
}
