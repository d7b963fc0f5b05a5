package stdio

import (
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
)

// openLogFile hands a file:// log straight to the process: the kernel
// appends, and the shim copies nothing.
func (p *Pipes) openLogFile(cfg Config) error {
	uri := cfg.Stdout
	if uri == "" {
		uri = cfg.Stderr
	}
	u, err := url.Parse(uri)
	if err != nil || u.Scheme != "file" || u.Path == "" {
		return fmt.Errorf("log uri %q: want file:///path: %w", uri, ErrInvalidURI)
	}
	if err := os.MkdirAll(filepath.Dir(u.Path), 0o755); err != nil {
		return fmt.Errorf("log uri %q: %w", uri, err)
	}
	f, err := os.OpenFile(u.Path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		return fmt.Errorf("log uri %q: %w", uri, err)
	}
	p.child.Stdout = f
	if cfg.Stderr != "" {
		p.child.Stderr = f
	}
	if cfg.Stdout == "" {
		p.child.Stdout = nil
	}
	return nil
}

func isFileURI(s string) bool { return strings.HasPrefix(s, "file://") }
