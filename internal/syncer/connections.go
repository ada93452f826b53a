package syncer

import (
	"context"
	"fmt"
	"time"

	"github.com/msisync/msisync/internal/event"
	"github.com/msisync/msisync/internal/store"
)

// Connections (see doc.go, Stakeholder connections): which Dataverse
// connection records are opportunity roles, and which of those leave
// Marketo without a delete (retire). The role writer keeps the answers.

// CategoryStakeholder is the connectionrole category of opportunity
// stakeholder roles (Stakeholder, Champion, Decision Maker, ...).
const CategoryStakeholder = 1000

// roleCacheTTL bounds how long a role's category is trusted: roles are
// configuration and rarely change, so one read per role per hour is plenty.
const roleCacheTTL = time.Hour

type roleCategory struct {
	category int64
	name     string
	found    bool // false: the role does not exist (any more)
	at       time.Time
}

// How a connection record leaves Marketo without being deleted in Dataverse.
const (
	retireDeactivate = iota + 1 // statecode 1 (Inactive): role deleted, connection kept to reactivate
	retireDrop                  // no longer a stakeholder role: role deleted, connection forgotten
)

// connState is what the role writer knows of one connection record.
type connState struct {
	conn   *store.Connection // as it will be once written (interpretConnection)
	old    *store.Connection // as the store has it
	retire int               // retireDeactivate or retireDrop: delete the role, do not write it
}

// load reads the stored connections of the batch's connection records.
func (w *roleWriter) load(ctx context.Context) error {
	b := w.b
	var ids []string
	for _, r := range b.recs {
		if r.entity == event.EntityConnection {
			ids = append(ids, r.id)
		}
	}
	if len(ids) == 0 {
		return nil
	}
	conns, err := b.s.cfg.Store.GetConnections(ctx, ids)
	if err != nil {
		return fmt.Errorf("syncer: get connections: %w", err)
	}
	for id, c := range conns {
		c := c
		w.of(b.recs[event.EntityConnection+"/"+id]).old = &c
	}
	return nil
}

// classifyConnection runs after interpretConnection: it drops roles that are
// not stakeholder roles and marks deactivated connections.
func (w *roleWriter) classifyConnection(ctx context.Context, r *rec) error {
	ok, err := w.stakeholder(ctx, r)
	if err != nil || r.fail != nil {
		return err
	}
	c := w.of(r)
	if !ok {
		if c.old == nil {
			r.fail = &failure{act: actSkip}
		} else {
			c.retire = retireDrop // was a stakeholder role: take its Marketo role away
		}
		return nil
	}
	if w.inactive(r) {
		c.retire = retireDeactivate
	}
	return nil
}

// inactive reports whether a connection is deactivated: by its statecode
// when the events (or a re-read) carry it, else by the store, where a
// connection without a role link is one we deactivated earlier (every
// connection written to Marketo is stored together with its role link).
func (w *roleWriter) inactive(r *rec) bool {
	if v, ok := r.attrs["statecode"]; ok && !v.IsNull() {
		n, _ := v.Int()
		return n != 0
	}
	if w.of(r).old == nil {
		return false
	}
	_, live := w.b.links[store.KindRole][r.id]
	return !live
}

// stakeholder reports whether the connection's role is a Stakeholder-category
// role. Connection rows carry no category, so it takes a read of the
// connectionrole from Dataverse (cached per role id). Without Dataverse
// access, or with AnyConnectionRole, every role is accepted: the behaviour
// before the check existed. A connection whose events do not name its role
// keeps the stored one, which was checked when it was stored. A failed read
// requeues the record (r.fail).
func (w *roleWriter) stakeholder(ctx context.Context, r *rec) (bool, error) {
	s := w.b.s
	if s.cfg.Dataverse == nil || s.cfg.AnyConnectionRole {
		return true, nil
	}
	ref, ok := refOf(r.attrs, "record2roleid")
	if !ok {
		return true, nil
	}
	c, err := s.readRole(ctx, r, ref.ID)
	if err != nil || r.fail != nil {
		return false, err
	}
	return c.found && c.category == CategoryStakeholder, nil
}

// readRole returns the connectionrole's category and name, read from
// Dataverse once per role per roleCacheTTL (the name serves nameRefs, the
// category stakeholder). A failed read sets r.fail (requeue).
func (s *Syncer) readRole(ctx context.Context, r *rec, id string) (roleCategory, error) {
	now := s.clk.Now()
	s.roleMu.Lock()
	c, cached := s.roleCache[id]
	s.roleMu.Unlock()
	if cached && now.Sub(c.at) < roleCacheTTL {
		return c, nil
	}
	attrs, err := s.cfg.Dataverse.Read(ctx, "connectionrole", id, []string{"name", "category"})
	switch {
	case err == nil:
		c = roleCategory{found: true, at: now, name: attrs["name"].Text()}
		if v, ok := attrs["category"]; ok {
			c.category, _ = v.Int()
		}
	case ctx.Err() != nil:
		return roleCategory{}, ctx.Err()
	case s.cfg.IsNotFound != nil && s.cfg.IsNotFound(err):
		c = roleCategory{at: now}
	default:
		r.fail = &failure{act: actRequeue, reason: ReasonGaveUp,
			desc: fmt.Sprintf("read connectionrole %s (role of %s) from Dataverse: %v", id, r.name(), err)}
		return roleCategory{}, nil
	}
	s.roleMu.Lock()
	s.roleCache[id] = c
	s.roleMu.Unlock()
	return c, nil
}

// interpretConnection keeps opportunity→contact stakeholder rows and drops
// every other connection (including the reciprocal contact→opportunity row).
func (w *roleWriter) interpretConnection(r *rec) {
	x := w.of(r)
	c := store.Connection{ID: r.id}
	if x.old != nil {
		c = *x.old
	}
	r1, ok1 := refOf(r.attrs, "record1id")
	r2, ok2 := refOf(r.attrs, "record2id")
	if ok1 || ok2 {
		if !ok1 || !ok2 || r1.LogicalName != event.EntityOpportunity || r2.LogicalName != event.EntityContact {
			r.fail = &failure{act: actSkip}
			return
		}
		c.OpportunityID, c.PersonID = r1.ID, r2.ID
	}
	if v, ok := r.attrs["ismaster"]; ok && v.Kind == event.KindBool && !v.Bool && !ok1 {
		r.fail = &failure{act: actSkip}
		return
	}
	if role, ok := w.b.s.cfg.Mapping.Apply(event.EntityConnection, r.attrs, r.formatted)["role"].(string); ok && role != "" {
		c.Role = role
	}
	if c.OpportunityID == "" || c.PersonID == "" || c.Role == "" {
		r.fail = &failure{act: actSkip}
		return
	}
	x.conn = &c
}
