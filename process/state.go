package process

import (
	"errors"
	"fmt"
)

// State is where a process is in its lifecycle.
type State uint8

// The states of a process.
const (
	Created State = iota + 1 // runtime create done, not started
	Running
	Paused
	Stopped // exited and reaped
	Deleted
)

func (s State) String() string {
	switch s {
	case Created:
		return "created"
	case Running:
		return "running"
	case Paused:
		return "paused"
	case Stopped:
		return "stopped"
	case Deleted:
		return "deleted"
	}
	return fmt.Sprintf("State(%d)", uint8(s))
}

// allowed is the transition table. An exit can arrive in any live state.
var allowed = map[State][]State{
	Created: {Running, Stopped, Deleted},
	Running: {Paused, Stopped},
	Paused:  {Running, Stopped},
	Stopped: {Deleted},
}

// Sentinel errors. The task layer maps them to containerd's error classes.
var (
	// ErrInvalidState: the operation is not allowed in the current state.
	ErrInvalidState = errors.New("invalid state")
	// ErrFinished: the process has already exited.
	ErrFinished = errors.New("process already finished")
	// ErrNotFound: the runtime does not know the container.
	ErrNotFound = errors.New("not found")
	// ErrAlreadyExists: an exec id is taken.
	ErrAlreadyExists = errors.New("already exists")
	// ErrInvalidArgument: a request is malformed.
	ErrInvalidArgument = errors.New("invalid argument")
)

func canMove(from, to State) bool {
	for _, s := range allowed[from] {
		if s == to {
			return true
		}
	}
	return false
}

// move returns the error for an illegal transition, naming both states.
func move(from *State, to State) error {
	if !canMove(*from, to) {
		return fmt.Errorf("process is %s, cannot become %s: %w", *from, to, ErrInvalidState)
	}
	*from = to
	return nil
}
