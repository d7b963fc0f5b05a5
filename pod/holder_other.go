//go:build !amd64

package pod

import "debug/elf"

// No hand-assembled holder for this architecture: the holder is a copy of
// the shim (Hold).
const holderMachine = elf.EM_NONE

var holderCode []byte
