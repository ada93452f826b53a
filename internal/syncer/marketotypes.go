package syncer

import "github.com/msisync/msisync/internal/marketo"

// Short names for the Marketo domain types the syncer speaks.
type (
	Object       = marketo.Object
	Record       = marketo.Record
	Result       = marketo.Result
	Reason       = marketo.Reason
	SyncRequest  = marketo.SyncRequest
	Class        = marketo.Class
	MarketoError = marketo.Error
)

const (
	SalesPersons  = marketo.SalesPersons
	Companies     = marketo.Companies
	Leads         = marketo.Leads
	Opportunities = marketo.Opportunities
	Roles         = marketo.Roles

	ClassReauth     = marketo.ClassReauth
	ClassThrottled  = marketo.ClassThrottled
	ClassTransient  = marketo.ClassTransient
	ClassQuota      = marketo.ClassQuota
	ClassConfig     = marketo.ClassConfig
	ClassPermanent  = marketo.ClassPermanent
	ClassDependency = marketo.ClassDependency
)

// ErrQuotaExhausted is wrapped by Marketo errors while the daily quota is used up.
var ErrQuotaExhausted = marketo.ErrQuotaExhausted

// ClassOf classifies a Marketo code.
func ClassOf(code string) Class { return marketo.ClassOf(code) }
