// Package configstore keeps each release's config as a write-once snapshot in
// Consul KV, at a path named by the config's content hash. A job version
// reads its snapshot by that path, so reverting a job version also brings
// back the config it ran with.
package configstore

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	consul "github.com/hashicorp/consul/api"
)

// DefaultPrefix is the KV folder under which snapshots live.
const DefaultPrefix = "counter/releases"

// ErrLocked means another deployer holds the job's lock.
var ErrLocked = errors.New("locked")

// ConsulError is a Consul call of the store's that failed. Doing says what
// the store was doing, in words a refusal of the deployer's token can
// quote: Consul's own answer names the permission, not the operation.
type ConsulError struct {
	Doing string
	// Capability is what Consul's answer showed the token lacks, when the
	// store could tell by itself: Consul hides keys instead of refusing.
	Capability string
	Err        error
}

func (e *ConsulError) Error() string { return e.Doing + " in Consul: " + e.Err.Error() }

func (e *ConsulError) Unwrap() error { return e.Err }

// errHidden is the error of a read whose keys Consul left out.
var errHidden = errors.New("Consul left keys out of its answer, as it does with keys the token may not read")

// hidden turns keys that Consul left out of a read into errHidden. Consul
// does not refuse a read of keys the token may not read: it leaves them
// out and says so in a header. Taken as absent, a snapshot would look
// deleted, and the deployer would "repair" what it merely cannot see.
func hidden(meta *consul.QueryMeta, err error) error {
	if err != nil || meta == nil || !meta.ResultsFilteredByACLs {
		return err
	}
	return errHidden
}

// consulErr wraps err, from a read or write of the keys under prefix.
func consulErr(err error, prefix, format string, args ...any) error {
	e := &ConsulError{Doing: fmt.Sprintf(format, args...), Err: err}
	if errors.Is(err, errHidden) {
		e.Capability = fmt.Sprintf("key:read on %q", prefix)
	}
	return e
}

// Store reads and writes snapshots in Consul KV.
type Store struct {
	client *consul.Client
	prefix string
	// Progress, when set, hears that a write waits for Consul to answer
	// again.
	Progress io.Writer
	// Patience is how long a write keeps asking a Consul that answers
	// 5xx or not at all (a leader lost mid-submit); 0 is PutPatience.
	Patience time.Duration
}

// PutPatience is how long Put asks again by default: a Consul election
// takes seconds.
const PutPatience = 30 * time.Second

// CheckPrefix refuses a prefix that Consul would store under one name and
// read under another: a transaction stores a key as given, but every
// /v1/kv/ read has its path cleaned, so a ".", ".." or empty segment
// ("a//b") would make each snapshot unreadable where it was written. Only
// letters, digits and "-_." are allowed in a segment, so that the path is
// the same in a URL, a template and an ACL rule.
func CheckPrefix(prefix string) error {
	trimmed := strings.Trim(prefix, "/")
	if trimmed == "" {
		return fmt.Errorf("%q has no folder name", prefix)
	}
	for _, seg := range strings.Split(trimmed, "/") {
		switch {
		case seg == "":
			return fmt.Errorf("%q has an empty segment (//): Consul reads it as one /, so snapshots would be written where no read finds them", prefix)
		case seg == "." || seg == "..":
			return fmt.Errorf("%q has a %q segment: Consul cleans it out of every read, so snapshots would be written where no read finds them", prefix, seg)
		case !prefixSegment.MatchString(seg):
			return fmt.Errorf("%q: segment %q: want letters, digits, '-', '_' and '.' only", prefix, seg)
		}
	}
	return nil
}

var prefixSegment = regexp.MustCompile(`^[A-Za-z0-9_.-]+$`)

// New returns a Store writing under prefix (DefaultPrefix when empty).
func New(client *consul.Client, prefix string) *Store {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	return &Store{client: client, prefix: strings.Trim(prefix, "/")}
}

// Hash returns the content hash of a config: the first 16 hex digits of the
// SHA-256 of its sorted "KEY"="VALUE" lines, quoted so that no value can
// pass for another key.
func Hash(values map[string]string) string {
	h := sha256.New()
	for _, k := range slices.Sorted(maps.Keys(values)) {
		fmt.Fprintf(h, "%q=%q\n", k, values[k])
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// Folder is where a job's snapshots live.
func (s *Store) Folder(namespace, job string) string {
	return s.prefix + "/" + namespace + "/" + job
}

// Path is the path of the snapshot called name: a config's content hash,
// or RepairName of it.
func (s *Store) Path(namespace, job, name string) string {
	return s.Folder(namespace, job) + "/" + name
}

// RepairName names the nth fresh snapshot of a config whose first one was
// edited or deleted by hand (n from 2). Snapshots are write-once, so a
// repair writes a new one rather than fixing the old.
func RepairName(hash string, n int) string { return fmt.Sprintf("%s-r%d", hash, n) }

// HashOf returns the config hash a snapshot name stands for.
func HashOf(name string) string {
	hash, _, _ := strings.Cut(name, "-r")
	return hash
}

// Put writes values at path in one transaction that fails if any key
// exists, so a snapshot is never half-written and never changed. created
// reports whether this call wrote it; an existing snapshot with the same
// content is fine (the same config, released again), one with other content
// is an error: someone edited it.
func (s *Store) Put(ctx context.Context, path string, values map[string]string) (created bool, err error) {
	var ops consul.TxnOps
	for _, k := range slices.Sorted(maps.Keys(values)) {
		ops = append(ops, &consul.TxnOp{KV: &consul.KVTxnOp{
			Verb: consul.KVCAS, Key: path + "/" + k, Value: []byte(values[k]), Index: 0,
		}})
	}
	ok, resp, err := s.txn(ctx, ops, path)
	if err != nil {
		return false, consulErr(err, path+"/", "write config snapshot %s", path)
	}
	if ok {
		return true, nil
	}
	// Not written by this call, or written by an attempt whose answer was
	// lost: created stays false either way, so that a failed release
	// never deletes a snapshot it cannot be sure is its own.
	existing, found, err := s.Get(ctx, path)
	if err != nil {
		return false, err
	}
	if found && maps.Equal(existing, values) {
		return false, nil
	}
	var why []string
	for _, e := range resp.Errors {
		why = append(why, e.What)
	}
	return false, fmt.Errorf("config snapshot %s already exists with other content %v (edited by hand?): %s; "+
		"snapshots are write-once: delete it only if no release uses it", path, existing, strings.Join(why, "; "))
}

// txn runs the create-only transaction of Put, asking again while Consul
// answers 5xx or does not answer: a write cut off by a lost leader may or
// may not have been applied, and asking again (create-only) tells which.
func (s *Store) txn(ctx context.Context, ops consul.TxnOps, path string) (bool, *consul.TxnResponse, error) {
	patience := s.Patience
	if patience == 0 {
		patience = PutPatience
	}
	var since time.Time
	for {
		ok, resp, _, err := s.client.Txn().Txn(ops, (&consul.QueryOptions{}).WithContext(ctx))
		if err == nil || !transient(err) || ctx.Err() != nil {
			if err == nil && !since.IsZero() && s.Progress != nil {
				fmt.Fprintf(s.Progress, "    Consul answers again after %s\n", time.Since(since).Round(100*time.Millisecond))
			}
			return ok, resp, err
		}
		if since.IsZero() {
			since = time.Now()
			if s.Progress != nil {
				fmt.Fprintf(s.Progress, "    Consul does not answer the write of %s (%v); asking again for up to %s\n", path, err, patience)
			}
		}
		if time.Since(since) > patience {
			return false, nil, fmt.Errorf("no answer for %s: %w", patience, err)
		}
		select {
		case <-ctx.Done():
			return false, nil, err
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// transient reports whether a failed Consul call may succeed when made
// again: Consul answered 5xx (consul/api words a failed transaction
// "Failed request: ..." and other calls "Unexpected response code: 5..."),
// or did not answer at all. A refusal or any 4xx stays what it is.
func transient(err error) bool {
	var se consul.StatusError
	if errors.As(err, &se) {
		return se.Code >= 500
	}
	var ne net.Error
	if errors.As(err, &ne) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return true
	}
	msg := err.Error()
	if strings.Contains(msg, "Permission denied") || strings.Contains(msg, "ACL not found") {
		return false
	}
	return strings.HasPrefix(msg, "Failed request: ") || strings.Contains(msg, "Unexpected response code: 5")
}

// Get reads the snapshot at path.
func (s *Store) Get(ctx context.Context, path string) (values map[string]string, found bool, err error) {
	pairs, meta, err := s.client.KV().List(path+"/", (&consul.QueryOptions{}).WithContext(ctx))
	if err = hidden(meta, err); err != nil {
		return nil, false, consulErr(err, path+"/", "read config snapshot %s", path)
	}
	if len(pairs) == 0 {
		return nil, false, nil
	}
	values = make(map[string]string, len(pairs))
	for _, p := range pairs {
		values[strings.TrimPrefix(p.Key, path+"/")] = string(p.Value)
	}
	return values, true, nil
}

// Delete removes the snapshot at path. It is for undoing a snapshot this
// process created for a release that was never registered, and for gc.
func (s *Store) Delete(ctx context.Context, path string) error {
	if _, err := s.client.KV().DeleteTree(path+"/", (&consul.WriteOptions{}).WithContext(ctx)); err != nil {
		return consulErr(err, path+"/", "delete config snapshot %s", path)
	}
	return nil
}

// List returns the names of the snapshots stored for a job.
func (s *Store) List(ctx context.Context, namespace, job string) ([]string, error) {
	folder := s.Folder(namespace, job) + "/"
	keys, meta, err := s.client.KV().Keys(folder, "/", (&consul.QueryOptions{}).WithContext(ctx))
	if err = hidden(meta, err); err != nil {
		return nil, consulErr(err, folder, "list the config snapshots under %s", folder)
	}
	var hashes []string
	for _, k := range keys {
		if h := strings.Trim(strings.TrimPrefix(k, folder), "/"); h != "" && !strings.HasPrefix(h, ".") {
			hashes = append(hashes, h)
		}
	}
	return hashes, nil
}

// LockTTL is the deploy lock's session TTL. A deployer that dies without
// unlocking (kill -9, a lost machine) stops renewing it, and Consul deletes
// the lock once the session expires: within twice the TTL, as Consul
// promises.
const LockTTL = 10 * time.Second

// lockMonitorRetries is how many failed reads, a second apart, the lock's
// watch rides out before it calls the lock lost: as long as a write waits
// for a Consul that does not answer (PutPatience's 30 s).
const lockMonitorRetries = 30

// Lock takes the job's deploy lock without waiting, so two deployers never
// change one job at once: the second gets ErrLocked, with what holder wrote.
// The lock lives in a Consul session renewed while it is held, and deleted
// with it (behavior "delete"), so a dead holder leaves nothing behind. lost
// is closed if the lock is lost before unlock: the session ended (its TTL
// ran out while Consul was unreachable, or someone destroyed it), and
// another deployer may take the lock.
func (s *Store) Lock(ctx context.Context, namespace, job, holder string) (unlock func(), lost <-chan struct{}, err error) {
	key := s.LockKey(namespace, job)
	l, err := s.client.LockOpts(&consul.LockOptions{
		Key:   key,
		Value: []byte(holder),
		SessionOpts: &consul.SessionEntry{
			Name:     "deployer " + job,
			TTL:      LockTTL.String(),
			Behavior: consul.SessionBehaviorDelete,
			// Consul's default lock delay (15 s) would keep the lock from a
			// new holder after a dead one's session expires. Two holders at
			// once cannot both change the job: Nomad enforces the modify
			// index and the prior version.
			LockDelay: time.Millisecond,
		},
		SessionTTL:   LockTTL.String(),
		LockTryOnce:  true,
		LockWaitTime: 200 * time.Millisecond,
		// Without retries the lock's monitor calls it lost on the first
		// error of its watch, and a Consul leader election answers 500s
		// for seconds while the session lives on: a submit then stopped
		// with "lost the lock" (TestReleasesSurviveClusterFaults). A
		// session that did end is still seen, as the key going, which is
		// no error.
		MonitorRetries:   lockMonitorRetries,
		MonitorRetryTime: time.Second,
	})
	if err != nil {
		return nil, nil, err
	}
	lostCh, err := l.Lock(ctx.Done())
	if err != nil {
		return nil, nil, consulErr(err, key, "take the deploy lock %s", key)
	}
	if lostCh == nil {
		held := ""
		if p, _, err := s.client.KV().Get(key, nil); err == nil && p != nil {
			held = fmt.Sprintf(": held by %s", p.Value)
		}
		return nil, nil, fmt.Errorf("%w: another deploy of %s is in progress%s; retry once it ends, or with -wait", ErrLocked, job, held)
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			_ = l.Unlock()
			_ = l.Destroy()
		})
	}, lostCh, nil
}

// LockKey is the KV key of a job's deploy lock.
func (s *Store) LockKey(namespace, job string) string {
	return s.prefix + "/.locks/" + namespace + "/" + job
}

// All reads every snapshot of a job in one call: name -> values.
func (s *Store) All(ctx context.Context, namespace, job string) (map[string]map[string]string, error) {
	folder := s.Folder(namespace, job) + "/"
	pairs, meta, err := s.client.KV().List(folder, (&consul.QueryOptions{}).WithContext(ctx))
	if err = hidden(meta, err); err != nil {
		return nil, consulErr(err, folder, "read the config snapshots under %s", folder)
	}
	all := map[string]map[string]string{}
	for _, p := range pairs {
		hash, key, ok := strings.Cut(strings.TrimPrefix(p.Key, folder), "/")
		if !ok || key == "" {
			continue
		}
		if all[hash] == nil {
			all[hash] = map[string]string{}
		}
		all[hash][key] = string(p.Value)
	}
	return all, nil
}
