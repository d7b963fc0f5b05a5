//go:build !linux

package cgroup

import (
	"context"
	"errors"
)

// OOMWatcher needs epoll, eventfd and inotify: Linux only.
type OOMWatcher struct{}

// NewOOMWatcher returns errors.ErrUnsupported.
func NewOOMWatcher(func(id string)) (*OOMWatcher, error) { return nil, errors.ErrUnsupported }

// Add returns errors.ErrUnsupported.
func (w *OOMWatcher) Add(string, *Cgroup) error { return errors.ErrUnsupported }

// Remove does nothing.
func (w *OOMWatcher) Remove(string) {}

// Run returns errors.ErrUnsupported.
func (w *OOMWatcher) Run(context.Context) error { return errors.ErrUnsupported }

// Close does nothing.
func (w *OOMWatcher) Close() error { return nil }
