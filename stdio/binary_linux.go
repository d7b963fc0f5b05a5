package stdio

import (
	"errors"
	"fmt"
	"strings"
)

func isBinaryURI(s string) bool { return strings.HasPrefix(s, "binary://") }

// openBinary starts a binary:// logger: not supported yet.
func (p *Pipes) openBinary(cfg Config) error {
	return fmt.Errorf("log uri %q: %w", cfg.Stdout, errors.ErrUnsupported)
}
