//go:build !amd64

package pod

// No hand-assembled holder for this architecture: the holder is a copy of
// the shim (Hold).
const holderMachine = elfEMNone

var holderCode []byte
