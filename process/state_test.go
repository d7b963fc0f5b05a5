package process

import (
	"errors"
	"testing"
)

func TestTransitions(t *testing.T) {
	all := []State{Created, Starting, Running, Paused, Stopped, Deleting, Deleted}
	want := map[[2]State]bool{
		{Created, Starting}: true, {Created, Stopped}: true, {Created, Deleting}: true,
		{Starting, Running}: true, {Starting, Created}: true, {Starting, Stopped}: true,
		{Running, Paused}: true, {Running, Stopped}: true,
		{Paused, Running}: true, {Paused, Stopped}: true,
		{Stopped, Deleting}: true,
		{Deleting, Deleted}: true, {Deleting, Created}: true, {Deleting, Stopped}: true,
	}
	for _, from := range all {
		for _, to := range all {
			s := from
			err := move(&s, to)
			if want[[2]State{from, to}] {
				if err != nil || s != to {
					t.Errorf("%s -> %s: %v", from, to, err)
				}
				continue
			}
			if !errors.Is(err, ErrInvalidState) || s != from {
				t.Errorf("%s -> %s allowed (err %v)", from, to, err)
			}
		}
	}
	if Deleted.String() != "deleted" || Deleting.String() != "deleting" || Starting.String() != "starting" ||
		State(42).String() != "State(42)" {
		t.Error("String")
	}
}
