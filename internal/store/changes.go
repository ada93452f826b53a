package store

import (
	"maps"
	"slices"
)

// Changes is every bookkeeping change one syncer batch makes (links,
// versions, connections, meta), collected while the batch runs and saved
// by Store.Apply in one transaction, so a crash never leaves a batch half
// recorded. It holds the net effect of the calls made on it in order: a
// link put and then deleted ends deleted, versions keep the highest value.
// The zero value is empty and ready to use.
type Changes struct {
	links    map[linkKey]*Link // nil: delete
	conns    map[string]*Connection
	versions map[string]int64
	meta     map[string]string
}

type linkKey struct{ kind, id string }

// PutLinks upserts links; the last one for a kind and external id wins.
func (c *Changes) PutLinks(links ...Link) {
	if c.links == nil {
		c.links = map[linkKey]*Link{}
	}
	for _, l := range links {
		c.links[linkKey{l.Kind, l.ExternalID}] = &l
	}
}

// DeleteLinks deletes the links of kind for externalIDs.
func (c *Changes) DeleteLinks(kind string, externalIDs ...string) {
	if c.links == nil {
		c.links = map[linkKey]*Link{}
	}
	for _, id := range externalIDs {
		c.links[linkKey{kind, id}] = nil
	}
}

// PutConnections upserts connections; the last one for an id wins.
func (c *Changes) PutConnections(conns ...Connection) {
	if c.conns == nil {
		c.conns = map[string]*Connection{}
	}
	for _, x := range conns {
		c.conns[x.ID] = &x
	}
}

// DeleteConnections deletes connections by id.
func (c *Changes) DeleteConnections(ids ...string) {
	if c.conns == nil {
		c.conns = map[string]*Connection{}
	}
	for _, id := range ids {
		c.conns[id] = nil
	}
}

// PutVersions stores versions; like Store.PutVersions a version never
// goes down, here nor in the store.
func (c *Changes) PutVersions(versions map[string]int64) {
	if c.versions == nil {
		c.versions = map[string]int64{}
	}
	for k, v := range versions {
		if old, ok := c.versions[k]; !ok || v > old {
			c.versions[k] = v
		}
	}
}

// PutMeta stores value under key.
func (c *Changes) PutMeta(key, value string) {
	if c.meta == nil {
		c.meta = map[string]string{}
	}
	c.meta[key] = value
}

// Empty reports whether there is nothing to apply.
func (c *Changes) Empty() bool {
	return len(c.links) == 0 && len(c.conns) == 0 && len(c.versions) == 0 && len(c.meta) == 0
}

// Link reports what the changes say about a link: put (the link, true,
// true), deleted (zero, false, true) or not mentioned (ok false).
func (c *Changes) Link(kind, externalID string) (l Link, put, ok bool) {
	p, ok := c.links[linkKey{kind, externalID}]
	if !ok || p == nil {
		return Link{}, false, ok
	}
	return *p, true, true
}

// Connection reports what the changes say about a connection, like Link.
func (c *Changes) Connection(id string) (x Connection, put, ok bool) {
	p, ok := c.conns[id]
	if !ok || p == nil {
		return Connection{}, false, ok
	}
	return *p, true, true
}

// The accessors below give adapters the net changes in a stable order
// (sorted by key), so concurrent applies lock rows in the same order.

// LinkPuts returns the links to upsert.
func (c *Changes) LinkPuts() []Link {
	var out []Link
	for _, k := range sortedLinkKeys(c.links) {
		if p := c.links[k]; p != nil {
			out = append(out, *p)
		}
	}
	return out
}

// LinkDeletes returns the external ids to delete, by kind.
func (c *Changes) LinkDeletes() map[string][]string {
	out := map[string][]string{}
	for _, k := range sortedLinkKeys(c.links) {
		if c.links[k] == nil {
			out[k.kind] = append(out[k.kind], k.id)
		}
	}
	return out
}

// ConnectionPuts returns the connections to upsert.
func (c *Changes) ConnectionPuts() []Connection {
	var out []Connection
	for _, id := range slices.Sorted(maps.Keys(c.conns)) {
		if p := c.conns[id]; p != nil {
			out = append(out, *p)
		}
	}
	return out
}

// ConnectionDeletes returns the connection ids to delete.
func (c *Changes) ConnectionDeletes() []string {
	var out []string
	for _, id := range slices.Sorted(maps.Keys(c.conns)) {
		if c.conns[id] == nil {
			out = append(out, id)
		}
	}
	return out
}

// Versions returns the versions to store (never lowering stored ones).
func (c *Changes) Versions() map[string]int64 { return maps.Clone(c.versions) }

// Meta returns the meta values to store.
func (c *Changes) Meta() map[string]string { return maps.Clone(c.meta) }

func sortedLinkKeys(m map[linkKey]*Link) []linkKey {
	keys := slices.Collect(maps.Keys(m))
	slices.SortFunc(keys, func(a, b linkKey) int {
		if a.kind != b.kind {
			if a.kind < b.kind {
				return -1
			}
			return 1
		}
		switch {
		case a.id < b.id:
			return -1
		case a.id > b.id:
			return 1
		}
		return 0
	})
	return keys
}
