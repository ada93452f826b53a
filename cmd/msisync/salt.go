package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
)

// metaFingerprintSalt is the store key of the installation's secret salt for
// the webhook-key fingerprint kept in the Dataverse service endpoint.
const metaFingerprintSalt = "dataverse.keyFingerprintSalt"

// metaStore is the part of the store installSalt uses.
type metaStore interface {
	GetMeta(ctx context.Context, key string) (string, bool, error)
	PutMeta(ctx context.Context, key, value string) error
}

// installSalt returns the installation's fingerprint salt, creating it on
// first use. It lives in the store so every replica (and every later
// `dataverse register`) computes the same fingerprint.
func installSalt(ctx context.Context, st metaStore) ([]byte, error) {
	read := func() ([]byte, bool, error) {
		v, ok, err := st.GetMeta(ctx, metaFingerprintSalt)
		if err != nil || !ok {
			return nil, false, err
		}
		b, err := hex.DecodeString(v)
		if err != nil || len(b) < 16 {
			return nil, false, fmt.Errorf("store meta %s is not a hex salt of ≥ 16 bytes: delete it to make a new one (the next register then updates the endpoint)", metaFingerprintSalt)
		}
		return b, true, nil
	}
	if b, ok, err := read(); err != nil || ok {
		return b, err
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return nil, fmt.Errorf("generate fingerprint salt: %w", err)
	}
	if err := st.PutMeta(ctx, metaFingerprintSalt, hex.EncodeToString(raw)); err != nil {
		return nil, fmt.Errorf("save fingerprint salt: %w", err)
	}
	b, _, err := read()
	return b, err
}
