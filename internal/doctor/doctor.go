// Package doctor diagnoses one Dataverse record's linkage in Marketo, the way
// Adobe's MSI troubleshooting page tells a person to do it by hand: is the
// record in Marketo, is the person linked to a company and a sales person
// that exist, and does the sales person's email equal the Dynamics user's.
package doctor

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"github.com/msisync/msisync/internal/event"
	"github.com/msisync/msisync/internal/marketo"
	"github.com/msisync/msisync/internal/marketo/marketotype"
	"github.com/msisync/msisync/internal/store"
)

// Marketo is the part of the Marketo client the doctor uses.
type Marketo interface {
	Query(ctx context.Context, obj marketotype.Object, filterType string, values []string, fields []string) ([]marketotype.Record, error)
}

// Dataverse reads a record (optional: nil when Dataverse is not configured).
type Dataverse interface {
	Read(ctx context.Context, logicalName, id string, columns []string) (event.Attributes, error)
}

// Links reads what the store knows.
type Links interface {
	GetLinks(ctx context.Context, kind string, externalIDs []string) (map[string]store.Link, error)
}

// Doctor runs the checks.
type Doctor struct {
	Marketo    Marketo
	Dataverse  Dataverse // may be nil
	Store      Links
	ScoreField string // MSI relative score field name in Marketo
}

// Status of a check.
type Status string

// Check statuses.
const (
	OK   Status = "ok"
	Fail Status = "fail"
	Warn Status = "warn"
	Info Status = "info"
)

// Check is one finding.
type Check struct {
	Name   string `json:"name"`
	Status Status `json:"status"`
	Detail string `json:"detail"`
	// Fix tells a person what to do about a failed check.
	Fix string `json:"fix,omitempty"`
}

// Report is the diagnosis of one record.
type Report struct {
	Entity   string  `json:"entity"`
	RecordID string  `json:"recordId"`
	Checks   []Check `json:"checks"`
}

// Healthy reports whether no check failed.
func (r *Report) Healthy() bool {
	for _, c := range r.Checks {
		if c.Status == Fail {
			return false
		}
	}
	return true
}

// String renders the report for a terminal.
func (r *Report) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s\n", r.Entity, r.RecordID)
	for _, c := range r.Checks {
		fmt.Fprintf(&b, "  [%-4s] %s: %s\n", c.Status, c.Name, c.Detail)
		if c.Fix != "" && c.Status != OK {
			fmt.Fprintf(&b, "         fix: %s\n", c.Fix)
		}
	}
	return b.String()
}

func (r *Report) add(name string, st Status, fix string, format string, args ...any) {
	r.Checks = append(r.Checks, Check{Name: name, Status: st, Detail: fmt.Sprintf(format, args...), Fix: fix})
}

// InputError is a bad entity or record id (the caller's fault, unlike an
// unreachable Marketo or store).
type InputError struct {
	Field  string // "entity" or "id"
	Reason string
}

func (e *InputError) Error() string { return "doctor: " + e.Field + " " + e.Reason }

// FieldIssue names the request field at fault, for the admin API's 422.
func (e *InputError) FieldIssue() (field, reason string) { return e.Field, e.Reason }

// Diagnose checks one record. entity is a Dataverse logical name.
func (d *Doctor) Diagnose(ctx context.Context, entity, id string) (*Report, error) {
	if !event.IsGUID(id) {
		return nil, &InputError{Field: "id", Reason: fmt.Sprintf("%q is not a GUID", id)}
	}
	id = event.NormalizeID(id)
	// The doctor's reads come out of the background share of the budget.
	ctx = marketo.WithPurpose(ctx, marketo.PurposeDoctor)
	r := &Report{Entity: entity, RecordID: id}
	var err error
	switch entity {
	case event.EntityContact, event.EntityLead:
		err = d.person(ctx, r, entity, id)
	case event.EntityAccount:
		err = d.company(ctx, r, id)
	case event.EntitySystemUser:
		err = d.salesPerson(ctx, r, id)
	case event.EntityOpportunity:
		err = d.opportunity(ctx, r, id)
	default:
		return nil, &InputError{Field: "entity", Reason: fmt.Sprintf("%q is not one of contact, lead, account, systemuser, opportunity", entity)}
	}
	return r, err
}

var personFields = []string{"id", "email", "externalPersonId", "externalCompanyId", "externalSalesPersonId",
	"msiLastInterestingMomentType", "msiLastInterestingMomentDate", "priority", "relativeUrgency"}

func (d *Doctor) person(ctx context.Context, r *Report, entity, id string) error {
	links, err := d.Store.GetLinks(ctx, store.KindPerson, []string{id})
	if err != nil {
		return fmt.Errorf("doctor: read store: %w", err)
	}
	if l, ok := links[id]; ok {
		r.add("store", OK, "", "synced as Marketo lead %s (%s)", l.MarketoID, l.Entity)
	} else {
		r.add("store", Warn, "check `msisync dlq list` for this record, or run `msisync backfill --entities "+entity+"`",
			"msisync has not recorded this %s as synced", entity)
	}
	fields := append(append([]string{}, personFields...), d.scoreField())
	leads, err := d.Marketo.Query(ctx, marketotype.Leads, "externalPersonId", []string{id}, fields)
	if err != nil {
		return fmt.Errorf("doctor: query Marketo lead by externalPersonId %s: %w", id, err)
	}
	merged, err := d.identity(ctx, r, entity, id, leads)
	if err != nil {
		return err
	}
	if merged && len(leads) == 0 {
		return nil // merged away and retired: no person should carry its id
	}
	switch len(leads) {
	case 0:
		r.add("marketo lead", Fail, "sync the record (check the dead-letter queue: `msisync dlq list --entity "+entity+"`)",
			"no Marketo lead has externalPersonId %s", id)
		return nil
	case 1:
		r.add("marketo lead", OK, "", "Marketo lead %v (%v)", leads[0]["id"], leads[0]["email"])
	default:
		r.add("marketo lead", Fail, "merge the duplicate leads in Marketo", "%d Marketo leads share externalPersonId %s", len(leads), id)
	}
	lead := leads[0]
	var dv event.Attributes
	if d.Dataverse != nil {
		cols := []string{"ownerid", "emailaddress1"}
		if entity == event.EntityContact {
			cols = append(cols, "parentcustomerid")
		} else {
			cols = append(cols, "parentaccountid")
		}
		dv, err = d.Dataverse.Read(ctx, entity, id, cols)
		if err != nil {
			r.add("dataverse", Warn, "", "cannot read the %s from Dataverse: %v", entity, err)
			dv = nil
		}
	}

	companyID := event.NormalizeID(text(lead["externalCompanyId"]))
	if companyID == "" {
		r.add("company link", Fail, "set the contact's account in Dynamics (parentcustomerid) and let it sync; MSI shows a lead's activities under its account only when linked",
			"the Marketo lead has no externalCompanyId")
	} else {
		if dv != nil {
			want := refID(dv, "parentcustomerid", "parentaccountid")
			if want != "" && !strings.EqualFold(want, companyID) {
				r.add("company link", Fail, "the Dynamics account changed and the change did not reach Marketo: replay dead letters or backfill the "+entity,
					"Marketo says company %s, Dynamics says account %s", companyID, want)
			}
		}
		if err := d.companyExists(ctx, r, companyID); err != nil {
			return err
		}
	}
	spID := event.NormalizeID(text(lead["externalSalesPersonId"]))
	if spID == "" {
		r.add("sales person link", Warn, "set an owner user (not a team) or MSISYNC_DEFAULT_SALES_PERSON_ID", "the Marketo lead has no externalSalesPersonId")
	} else {
		if dv != nil {
			if want := refID(dv, "ownerid"); want != "" && !strings.EqualFold(want, spID) {
				r.add("sales person link", Fail, "the owner change did not reach Marketo: replay dead letters or backfill",
					"Marketo says sales person %s, Dynamics says owner %s", spID, want)
			}
		}
		if err := d.salesPerson(ctx, r, spID); err != nil {
			return err
		}
	}
	var msi []string
	for _, f := range []string{"msiLastInterestingMomentType", "msiLastInterestingMomentDate", "priority", "relativeUrgency", d.scoreField()} {
		if v := text(lead[f]); v != "" {
			msi = append(msi, f+"="+v)
		}
	}
	if len(msi) == 0 {
		r.add("msi fields", Info, "", "no MSI values on the lead yet (Marketo computes them from activity)")
	} else {
		r.add("msi fields", Info, "", "%s", strings.Join(msi, ", "))
	}
	return nil
}

func (d *Doctor) companyExists(ctx context.Context, r *Report, companyID string) error {
	_, err := d.findCompany(ctx, r, companyID)
	return err
}

// findCompany checks the company is in Marketo and returns it (nil when not).
func (d *Doctor) findCompany(ctx context.Context, r *Report, companyID string) (marketotype.Record, error) {
	cs, err := d.Marketo.Query(ctx, marketotype.Companies, "externalCompanyId", []string{companyID}, []string{"id", "company", "externalCompanyId", "externalSalesPersonId"})
	if err != nil {
		return nil, fmt.Errorf("doctor: query Marketo company %s: %w", companyID, err)
	}
	if len(cs) == 0 {
		r.add("company", Fail, "sync the account: `msisync backfill --entities account` or replay its dead letters (`msisync dlq list --entity account`)",
			"no Marketo company has externalCompanyId %s", companyID)
		return nil, nil
	}
	r.add("company", OK, "", "Marketo company %v (%v)", cs[0]["id"], cs[0]["company"])
	return cs[0], nil
}

func (d *Doctor) company(ctx context.Context, r *Report, id string) error {
	c, err := d.findCompany(ctx, r, id)
	if err != nil || c == nil {
		return err
	}
	if sp := text(c["externalSalesPersonId"]); sp != "" {
		err = d.salesPerson(ctx, r, event.NormalizeID(sp))
	} else {
		r.add("sales person link", Warn, "MSI needs externalSalesPersonId on companies: give the account a user owner", "the company has no externalSalesPersonId")
	}
	return err
}

func (d *Doctor) opportunity(ctx context.Context, r *Report, id string) error {
	opps, err := d.Marketo.Query(ctx, marketotype.Opportunities, "externalOpportunityId", []string{id}, []string{"marketoGUID", "name", "externalCompanyId", "externalSalesPersonId"})
	if err != nil {
		return fmt.Errorf("doctor: query Marketo opportunity %s: %w", id, err)
	}
	if len(opps) == 0 {
		r.add("opportunity", Fail, "sync the opportunity (see `msisync dlq list --entity opportunity`)", "no Marketo opportunity has externalOpportunityId %s", id)
		return nil
	}
	r.add("opportunity", OK, "", "Marketo opportunity %v (%v)", opps[0]["marketoGUID"], opps[0]["name"])
	if c := event.NormalizeID(text(opps[0]["externalCompanyId"])); c != "" {
		if err := d.companyExists(ctx, r, c); err != nil {
			return err
		}
	} else {
		r.add("company link", Fail, "set the opportunity's account in Dynamics", "the opportunity has no externalCompanyId")
	}
	roles, err := d.Marketo.Query(ctx, marketotype.Roles, "externalOpportunityId", []string{id}, []string{"marketoGUID", "leadId", "role"})
	if err != nil {
		return fmt.Errorf("doctor: query Marketo roles of opportunity %s: %w", id, err)
	}
	var rs []string
	for _, ro := range roles {
		rs = append(rs, fmt.Sprintf("lead %v as %v", ro["leadId"], ro["role"]))
	}
	sort.Strings(rs)
	r.add("roles", Info, "", "%d role(s): %s", len(roles), strings.Join(rs, "; "))
	return nil
}

// salesPerson checks the sales person exists and, with Dataverse, that its
// email equals the Dynamics user's (else MSI shows nothing in Dynamics).
func (d *Doctor) salesPerson(ctx context.Context, r *Report, id string) error {
	sps, err := d.Marketo.Query(ctx, marketotype.SalesPersons, "externalSalesPersonId", []string{id}, []string{"id", "email", "externalSalesPersonId"})
	if err != nil {
		return fmt.Errorf("doctor: query Marketo sales person %s: %w", id, err)
	}
	if len(sps) == 0 {
		r.add("sales person", Fail, "sync the user: `msisync backfill --entities systemuser`", "no Marketo sales person has externalSalesPersonId %s", id)
		return nil
	}
	email := text(sps[0]["email"])
	r.add("sales person", OK, "", "Marketo sales person %v (%s)", sps[0]["id"], email)
	if d.Dataverse == nil {
		return nil
	}
	u, err := d.Dataverse.Read(ctx, event.EntitySystemUser, id, []string{"internalemailaddress"})
	if err != nil {
		// The whole error: errors.Unwrap gives nil for an unwrapped one.
		r.add("sales person email", Warn, "", "cannot read user %s from Dataverse: %v", id, err)
		return nil
	}
	want := u["internalemailaddress"].Text()
	if !strings.EqualFold(want, email) {
		r.add("sales person email", Fail, "the emails must be equal or MSI data does not show in the Marketo tab in Dynamics: update the user and let it sync",
			"Marketo %q differs from Dynamics %q", email, want)
	} else {
		r.add("sales person email", OK, "", "matches the Dynamics user")
	}
	return nil
}

func (d *Doctor) scoreField() string {
	if d.ScoreField != "" {
		return d.ScoreField
	}
	return "relativeScore"
}

func text(v any) string {
	if v == nil {
		return ""
	}
	return strings.TrimSpace(fmt.Sprint(v))
}

func refID(a event.Attributes, names ...string) string {
	for _, n := range names {
		if v, ok := a[n]; ok {
			if ref, ok := v.Reference(); ok {
				return ref.ID
			}
			if s := v.Text(); event.IsGUID(s) {
				return event.NormalizeID(s)
			}
		}
	}
	return ""
}

// identity checks what keeps one Dynamics record one Marketo person: the
// record is live in Dynamics (not deactivated, not merged into another),
// and no other linked Marketo person holds its email. It reports whether
// the record was merged into another.
func (d *Doctor) identity(ctx context.Context, r *Report, entity, id string, leads []marketotype.Record) (bool, error) {
	var ids []string
	for _, l := range leads {
		ids = append(ids, text(l["id"]))
	}
	if d.Dataverse != nil {
		a, err := d.Dataverse.Read(ctx, entity, id, []string{"statecode", "merged", "masterid"})
		switch {
		case err != nil:
			r.add("record state", Warn, "", "cannot read the %s's state from Dataverse: %v", entity, err)
		case a["merged"].Kind == event.KindBool && a["merged"].Bool:
			master := refID(a, "masterid")
			if len(leads) > 0 {
				r.add("record state", Fail, "the Merge did not reach msisync (register the Merge step: `msisync dataverse register`) or failed (see `msisync dlq list --entity "+entity+"`); "+
					"clear externalPersonId on the Marketo person or delete it, and sync the master "+master,
					"the %s was merged into %s in Dynamics but Marketo person %s still carries its id", entity, master, strings.Join(ids, ", "))
			} else {
				r.add("record state", OK, "", "merged into %s in Dynamics; no Marketo person carries its id", master)
			}
			return true, nil
		default:
			st, _ := a["statecode"].Int()
			switch {
			case st == 0 || len(leads) == 0:
			case entity == event.EntityLead && st == 1:
				r.add("record state", Warn, "the qualified contact takes the person over through originatingleadid: sync the contact (`msisync doctor contact <id>`)",
					"the lead is qualified in Dynamics but Marketo person %s still carries its id", strings.Join(ids, ", "))
			default:
				r.add("record state", Warn, "", "the %s is deactivated in Dynamics (statecode %d); Marketo person %s still carries its id", entity, st, strings.Join(ids, ", "))
			}
		}
	}
	var emails []string
	for _, l := range leads {
		if e := text(l["email"]); e != "" && !strings.Contains(e, ",") {
			emails = append(emails, e)
		}
	}
	if len(emails) == 0 {
		return false, nil
	}
	same, err := d.Marketo.Query(ctx, marketotype.Leads, "email", emails[:1], []string{"id", "email", "externalPersonId"})
	if err != nil {
		return false, fmt.Errorf("doctor: query Marketo leads by email %s: %w", emails[0], err)
	}
	var linked []string
	unlinked := 0
	for _, o := range same {
		ext := event.NormalizeID(text(o["externalPersonId"]))
		switch {
		case ext == id:
		case ext == "":
			unlinked++
		default:
			linked = append(linked, fmt.Sprintf("%v (%s)", o["id"], ext))
		}
	}
	sort.Strings(linked)
	switch {
	case len(linked) > 0:
		r.add("shared email", Warn, "allowed (msisync keeps one Marketo person per Dynamics record and never re-links one), but form fills and list imports keyed on email "+
			"update one of them: if the records are one person, merge them in Dynamics",
			"%s is also on Marketo person(s) linked to other records: %s", emails[0], strings.Join(linked, ", "))
	case unlinked > 0:
		r.add("shared email", Info, "", "%s is also on %d unlinked Marketo person(s) (form fills, imports)", emails[0], unlinked)
	default:
		r.add("shared email", OK, "", "no other Marketo person has %s", emails[0])
	}
	return false, nil
}
