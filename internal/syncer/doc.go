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
//     late, older Update still applies the columns no newer event wrote.
//     Image columns count too: a late event's post image is an older state
//     and does not overwrite what a newer event wrote. A Delete stores a
//     tombstone: later events of the record are stale.
//  5. Lock the records in the store (Store.LockRecords): a record another
//     worker holds is rescheduled once, to just after its lock's expiry
//     (store.LockInspector). This is what makes several workers on one queue
//     and one PostgreSQL store safe: a record is written by one worker at a
//     time, and the per-column versions make the order of writes irrelevant.
//     Locks are short (RecordLockTTL, 15 s) and renewed while their batch
//     runs (with a store.LockLeaser, after the first renewal, by extending
//     the worker's lock lease: one write for all of them). On shutdown Run lets the batch in flight finish (DrainTimeout),
//     which releases its locks; a batch cut short (drain deadline, crash)
//     keeps them until RecordLockTTL, since one of its Marketo writes may
//     still land, and its messages are abandoned for a replacement.
//  6. Re-read from Dataverse (when configured) truncated events, and Updates
//     of records not yet in Marketo that lack the columns needed to create
//     them; without Dataverse those wait and are finally dead-lettered with a
//     reason telling the user to register a post image or configure access.
//  7. Plan, without I/O (plan.go): every record by stage in MSI's order and
//     key order, what each depends on, which are upserted, which
//     connections retire their role, which records are deleted. Then
//     resolve the dependencies, latest stage first (role → opportunity →
//     person → company → sales person): in the batch, then the store, then
//     one Marketo query per object type, then a Dataverse read (the
//     dependency is added to the batch and the plan, and written first). Otherwise the message is requeued with a
//     capped exponential delay and, after MaxAttempts, dead-lettered with
//     "missing dependency: account 3f2… (company of contact 9a1…)".
//  8. Write in MSI's order, calls of ≤ BatchSize records per object type
//     (CallConcurrency of them at once, their results applied in chunk
//     order, marketo.go); deletes after the upserts, roles first. Per-record results map back to
//     messages: complete; requeue (throttled, transient, dependency codes);
//     dead-letter (permanent codes, with Marketo's code and message). Quota
//     (607) and configuration errors pause Marketo calls for the batch and
//     reschedule everything after RequeueMax without counting an attempt.
//  9. Save: every store change the batch made (links, versions,
//     connections, meta) was collected in batch.changes (store.Changes)
//     by the write, retire and delete stages; batch.save applies it with
//     one Store.Apply, one transaction. Then release the record locks and
//     settle the messages (in Run, while the next batch is processed; a
//     queue.BatchCompleter gets all completions in one call).
//
// # The pipeline at a glance
//
// batch.process (batch.go) runs the stages in this order; each has its own
// file, and what only one stage needs lives in that stage's type:
//
//	decode, coalesce  decode.go       Syncer.decode, Syncer.ignore, batch.group, fold
//	lock              batch.go        batch.lock (renewed and released: recordlocks.go)
//	load              resolve.go      batch.loadLinks; stored connections: roleWriter.load
//	merges            merges.go       merger.find: records merged away, and into which master
//	prepare           resolve.go      batch.prepare: re-reads, lookup names (names.go),
//	                  connections.go  which connections are roles, which retire
//	plan (pure)       plan.go         newPlan: order, dependencies, upserts, retiring, deletes
//	resolve           resolve.go      resolver: batch → store → Marketo query → Dataverse read
//	write, per object write.go        batch.write calls, in MSI's order, one writer per kind:
//	                                  objectWriter (sales persons, companies, opportunities),
//	                  persons.go      personWriter (lead strategies: personmatch.go),
//	                  roles.go        roleWriter
//	retire            roles.go        roleWriter.retire
//	unlink merged     merges.go       merger.unlink (keep policy), then merger.settle
//	delete            deletes.go      deleter.run: roles, opportunities, persons, companies
//	save              save.go         batch.save ══ Store.Apply(batch.changes): the ONE transaction ══
//	unlock, settle    settle.go       complete / requeue / dead-letter
//
// The batch holds only what every stage shares: the records by key (rec:
// coalesced columns and versions, messages, failure, written), the links
// known so far, the plan, the changes to save and the settle state; its
// Marketo write calls go through marketoCalls (marketo.go), which pauses
// them for the batch on quota and configuration errors. The writers own the
// rest: personWriter the per-person identity (the Marketo id a record is
// written by, stale links, lead take-over) and the persons found by email;
// roleWriter each connection record's connection (stored and new, retiring)
// and the stored connections by opportunity; merger the merged-away records;
// deleter what it deletes.
//
// Where to look:
//   - a role is written: roleWriter.write and upsert (roles.go); a role is
//     deleted by roleDeletes (roles.go), for retire, write and the deleter.
//   - a delete is planned: plan.deletes (plan.go) says which records; the
//     deleter (deletes.go) deletes them, in Marketo's order.
//   - a batch's bookkeeping is saved: batch.save (save.go), one Store.Apply
//     of batch.changes, filled by persist (save.go), each writer's write,
//     roleWriter.forgetRetired, deleter.forget and the links a Marketo
//     query found (batch.lookup).
//
// Stages read the store (links, versions, connections) but write to it only
// through batch.changes; reads after a stage overlay what it changed
// (batch.storeLinks, batch.connectionsByOpportunity). A few writes stay
// immediate on purpose: what must be durable before a Marketo call
// (person-creating and qualified-lead markers in persons.go, record and
// email locks) and two caches (the detected lead strategy, learnt lookup
// names).
//
// # What a message's Target may overwrite
//
// Per event, pre images, then post images, then the Target are folded in.
// The Target holds what the caller sent, so a lookup there usually has no
// name (bound by id): it takes the name of the same row (same id) from the
// post image, else the pre image, else what an earlier event of the record
// said. A null in the Target of a Create or Update is what the caller sent
// and clears the column; the attributes of other messages (Assign, SetState)
// are built from their inputs, so a null there does not erase an image's value.
//
// # Lookup names (refname fields)
//
// A field mapped with type refname (the opportunity role's "role") never
// receives a GUID. A lookup still without a name after the events takes it
// from FormattedValues, then the store (names learnt from earlier images or
// reads, store meta "refname/<table>/<id>"), then a Dataverse read of the
// row's primary name (connectionrole: name, read and cached with its
// category). Without a name the record is requeued and, after MaxAttempts,
// dead-lettered (MissingData) with a reason naming the lookup and the fix:
// register a post image (msisync dataverse register does) or set
// MSISYNC_DATAVERSE_URL.
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
// One Dynamics record, one Marketo person: a person linked to a record (its
// externalPersonId) is never re-linked to another by an email match.
// LeadStrategy "auto" tries one createOrUpdate keyed on externalPersonId and
// remembers in the store whether Marketo accepted it (1011 means no).
// "split" finds Marketo ids by filterType=externalPersonId and updates found
// persons by id (an email change too, even onto an address another person
// holds). The rest are matched by email, one filterType=email query per ≤ 300
// emails: a person without an externalPersonId (a form fill, an import) is
// linked by id (updateOnly), the lowest id first when several are; an email
// held only by persons linked to other records gets a new person
// (createDuplicate), as does an email nobody holds. A person with neither
// id nor email is dead-lettered. The email is locked in the store while it
// is matched (two workers never link one person to two records). A record
// created in Dataverse (a webhook or Service Bus Create) and unknown to the
// store skips the query by externalPersonId, unless the store holds the
// marker written before every create (a worker died mid-create). "lookup" keeps its one keyed createOrUpdate
// for linked records and, for records msisync has never linked, links an
// unlinked person with their email by id first (unless a person with their
// externalPersonId exists). A contact created by lead qualification takes
// over the Marketo person of its lead through originatingleadid (updateOnly
// by id), and later events of the lead are ignored; a contact sharing the
// lead's email without that link gets its own person.
//
// # Merges
//
// Dataverse merges accounts, contacts and leads: the subordinate is
// deactivated with merged = true and its children move to the master. The
// Merge event (on the master, naming SubordinateID) and the subordinate's
// own Update (merged = true) each retire the subordinate like a Delete:
// DeletePolicy delete removes its person, keep leaves the person in Marketo
// but clears its externalPersonId; a subordinate account's company is
// deleted. The master is re-read from Dataverse (when configured) and
// written; the children arrive as their own Updates. If the subordinate
// cannot be retired the Merge is retried.
package syncer
