package process

import (
	"errors"
	"fmt"
)

// State is where a process is in its lifecycle.
type State uint8

// The states of a process. Starting and Deleting are claims: an operation
// that calls the runtime or waits (Start, Delete) takes one under the
// process's lock, does its slow work without the lock, and then moves on.
// A second caller sees the claim and is refused instead of racing the first.
const (
	Created  State = iota + 1 // runtime create done, not started
	Starting                  // a Start is running
	Running
	Paused
	Stopped  // exited and reaped
	Deleting // a Delete is running
	Deleted
)

func (s State) String() string {
	switch s {
	case Created:
		return "created"
	case Starting:
		return "starting"
	case Running:
		return "running"
	case Paused:
		return "paused"
	case Stopped:
		return "stopped"
	case Deleting:
		return "deleting"
	case Deleted:
		return "deleted"
	}
	return fmt.Sprintf("State(%d)", uint8(s))
}

// allowed is the transition table, the only place that says which state
// may follow which. Every state change of Init and Exec goes through move.
//
// An exit moves a live process (Created, Starting, Running, Paused) to
// Stopped. An exit that arrives while Deleting (a Created init killed by
// the runtime's delete --force) is recorded without a move: Delete ends in
// Deleted, or, if it fails, back in Stopped. A Start that fails goes back to
// Created (init) or on to Stopped (an exec that never ran: its Wait returns).
var allowed = map[State][]State{
	Created:  {Starting, Stopped, Deleting},
	Starting: {Running, Created, Stopped},
	Running:  {Paused, Stopped},
	Paused:   {Running, Stopped},
	Stopped:  {Deleting},
	Deleting: {Deleted, Created, Stopped},
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

// move is the one transition function: it changes the state at cur to to if
// the table allows it, and otherwise returns ErrInvalidState naming both
// states. The caller holds the lock that guards *cur.
func move(cur *State, to State) error {
	if !canMove(*cur, to) {
		return fmt.Errorf("process is %s, cannot become %s: %w", *cur, to, ErrInvalidState)
	}
	*cur = to
	return nil
}

// live reports whether a process in state s may still be running.
func (s State) live() bool { return s == Created || s == Starting || s == Running || s == Paused }
