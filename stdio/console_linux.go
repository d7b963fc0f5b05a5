package stdio

import (
	"errors"
	"fmt"
)

// openConsole sets up a terminal: not supported yet.
func (p *Pipes) openConsole(cfg Config) error {
	return fmt.Errorf("terminal: %w", errors.ErrUnsupported)
}
