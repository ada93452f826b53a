// Package syncer is msisync's consumer pipeline: it takes change events from
// the queue in batches, coalesces them per record, resolves dependencies in
// MSI's order (sales person → company → person → opportunity → role), writes
// each object type to Marketo in one call of ≤ 300 records, and settles every
// message: complete, requeue with a capped exponential delay, or dead-letter
// with the exact reason.
//
// How a batch is processed
//
//  1. Receive up to ReceiveMax messages (waiting BatchWait to fill).
//  2. Decode: our envelope (event.Decode) or, for messages carrying the
//     http://schemas.microsoft.com/xrm/2011/Claims/* properties, Dataverse's
//     native Service Bus message (Config.ParseNative). Undecodable messages
//     are dead-lettered ("Undecodable").
//  3. Skip what needs no write: unknown entities/messages, QualifyLead itself
//     (the new contact's Create carries originatingleadid), events by the
//     integration's application user (UserId/InitiatingUserId), Updates that
//     touch only MSI write-back columns (mapping.WriteBack) and system columns.
//  4. Coalesce per record in version order. Versions are kept per column as
//     well as per record: an Update carries only the columns it changed, so a
//     late, older Update still applies the columns no newer event wrote. A
//     Delete stores a tombstone: later events of the record are stale.
//  5. Lock the records in the store (Store.LockRecords): a record another
//     worker holds is rescheduled once, to just after its lock's expiry
//     (store.LockInspector). This is what makes several workers on one queue
//     and one PostgreSQL store safe: a record is written by one worker at a
//     time, and the per-column versions make the order of writes irrelevant.
//     Locks are short (RecordLockTTL, 15 s) and renewed while their batch
//     runs. On shutdown Run lets the batch in flight finish (DrainTimeout),
//     which releases its locks; a batch cut short (drain deadline, crash)
//     keeps them until RecordLockTTL, since one of its Marketo writes may
//     still land, and its messages are abandoned for a replacement.
//  6. Re-read from Dataverse (when configured) truncated events, and Updates
//     of records not yet in Marketo that lack the columns needed to create
//     them; without Dataverse those wait and are finally dead-lettered with a
//     reason telling the user to register a post image or configure access.
//  7. Resolve dependencies, latest stage first (role → opportunity → person →
//     company → sales person): in the batch, then the store, then one Marketo
//     query per object type, then a Dataverse read (the dependency is added to
//     the batch and written first). Otherwise the message is requeued with a
//     capped exponential delay and, after MaxAttempts, dead-lettered with
//     "missing dependency: account 3f2… (company of contact 9a1…)".
//  8. Write in MSI's order, one call of ≤ BatchSize records per object type;
//     deletes after the upserts, roles first. Per-record results map back to
//     messages: complete; requeue (throttled, transient, dependency codes);
//     dead-letter (permanent codes, with Marketo's code and message). Quota
//     (607) and configuration errors pause Marketo calls for the batch and
//     reschedule everything after RequeueMax without counting an attempt.
//  9. Persist links, versions and connections, release the record locks, and
//     settle the messages (in Run, while the next batch is processed).
//
// # Stakeholder connections
//
// An opportunity→contact connection becomes a Marketo opportunity role
// (dedupe key: opportunity, person, role name); the reciprocal row and
// other connections are ignored. With Dataverse access, only roles of the
// Stakeholder category (1000) count: the category is read from the
// connectionrole and cached per role id (connection rows do not carry it).
// Without Dataverse access every role counts (Config.AnyConnectionRole forces
// that). A connection deactivated (statecode 1) loses its Marketo role but
// stays in the store without its role link, so a reactivation (statecode 0)
// writes the role again from the stored opportunity, contact and role. A
// connection whose role changes to a non-stakeholder role loses its role and
// is forgotten. Several connections may share one Marketo role: a delete,
// deactivation or role change removes it only when no other live connection
// (in the batch, or stored with a role link) holds the same key.
//
// # Lead upsert
//
// LeadStrategy "auto" tries one createOrUpdate keyed on externalPersonId and
// remembers in the store whether Marketo accepted it (1011 means no). "split"
// finds Marketo ids by filterType=externalPersonId, updates found persons by
// id and creates or links the rest by email (a person who filled a form is
// linked, not duplicated); a person with neither is dead-lettered. A contact
// created by lead qualification takes over the Marketo person of its lead
// (updateOnly by id), and later events of the lead are ignored.
package syncer
