package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
)

// KV keeps the small records that live beside questions: sign-in sessions,
// OAuth codes, grants, consents and client registrations, push
// subscriptions, MCP tasks. Every record has a TTL, so nothing is kept
// forever, and every instance sharing a store sees the same records, so N
// instances behind a load balancer act as one.
//
// Keys are opaque to the store; callers namespace them ("oauth:code:…").
// A key is 1–512 bytes without spaces or control characters; a value at
// most MaxKVValue bytes.
type KV interface {
	// Put stores value under key for ttl, replacing what was there.
	Put(ctx context.Context, key string, value []byte, ttl time.Duration) error
	// PutNew stores value only if key holds nothing; it reports whether it did.
	PutNew(ctx context.Context, key string, value []byte, ttl time.Duration) (bool, error)
	// Load returns the value under key, or ErrNotFound.
	Load(ctx context.Context, key string) ([]byte, error)
	// Take returns the value under key and deletes it in one step, so that
	// of two concurrent Takes exactly one gets it (single-use codes).
	// ErrNotFound when there is nothing.
	Take(ctx context.Context, key string) ([]byte, error)
	// Delete removes key; deleting nothing is not an error.
	Delete(ctx context.Context, key string) error
	// AddMember adds member to the set under key until the given time
	// (adding it again moves that time). The set lives as long as its
	// longest-lived member.
	AddMember(ctx context.Context, key, member string, until time.Time) error
	// RemoveMember removes member from the set; removing nothing is not an error.
	RemoveMember(ctx context.Context, key, member string) error
	// Members returns the set's members whose time has not passed, in no
	// particular order (at most MaxKVMembers).
	Members(ctx context.Context, key string) ([]string, error)
}

// Admit counts member in the expiring set under key (until the given time)
// and reports whether the set then holds at most limit members: a rate or
// count cap every instance shares. It adds first and then counts, taking
// the member back when it is over the cap, so that callers racing for the
// last place cannot all get it (all may be refused, which fails closed).
func Admit(ctx context.Context, kv KV, key, member string, until time.Time, limit int) (bool, error) {
	if err := kv.AddMember(ctx, key, member, until); err != nil {
		return false, fmt.Errorf("counting in %s: %w", key, err)
	}
	members, err := kv.Members(ctx, key)
	if err != nil {
		return false, fmt.Errorf("counting in %s: %w", key, err)
	}
	if len(members) > limit {
		_ = kv.RemoveMember(context.WithoutCancel(ctx), key, member)
		return false, nil
	}
	return true, nil
}

// Limits every KV backend enforces alike.
const (
	MaxKVKey     = 512
	MaxKVValue   = 1 << 20
	MaxKVMembers = 10_000
)

// ErrKVArgument wraps a key, value or TTL no caller should pass.
var ErrKVArgument = errors.New("store: kv: invalid argument")

func checkKVKey(key string) error {
	if key == "" || len(key) > MaxKVKey {
		return fmt.Errorf("%w: key must be 1–%d bytes, got %d", ErrKVArgument, MaxKVKey, len(key))
	}
	if strings.ContainsFunc(key, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
		return fmt.Errorf("%w: key %q holds a space or control character", ErrKVArgument, key)
	}
	return nil
}

func checkKVPut(key string, value []byte, ttl time.Duration) error {
	if err := checkKVKey(key); err != nil {
		return err
	}
	if len(value) > MaxKVValue {
		return fmt.Errorf("%w: value of %d bytes exceeds %d", ErrKVArgument, len(value), MaxKVValue)
	}
	if ttl < time.Millisecond {
		return fmt.Errorf("%w: ttl %v is below 1ms", ErrKVArgument, ttl)
	}
	return nil
}

func checkKVMember(key, member string) error {
	if err := checkKVKey(key); err != nil {
		return err
	}
	if member == "" || len(member) > MaxKVKey {
		return fmt.Errorf("%w: member must be 1–%d bytes", ErrKVArgument, MaxKVKey)
	}
	return nil
}
