package remotecontext

import (
	"sort"
	"strings"
	"time"

	"github.com/msisync/msisync/internal/event"
)

// maxParentDepth bounds the ParentContext chain we walk; real chains are a
// handful deep.
const maxParentDepth = 16

// Parse reads a RemoteExecutionContext posted by a Dataverse webhook step.
//
// A body that is not well-formed JSON gives a *SyntaxError. A well-formed body
// with missing or invalid fields (no MessageName or PrimaryEntityId, ids that
// are not GUIDs, typed values that do not fit their __type) gives one or more
// *event.FieldError (joined; see FieldErrors); the event is then still
// returned with what could be read, so a caller can tell that it is about an
// entity it ignores anyway.
//
// Interpretation:
//   - Entity/RecordID from PrimaryEntityName/PrimaryEntityId (a zero or missing
//     id falls back to the Target, EntityMoniker, LeadId or the Create's
//     OutputParameters id); the x-ms-dynamics-* headers fill in what the body lacks.
//   - Attributes: the Target entity's columns (Create, Update); Assign's
//     Assignee as "ownerid"; SetState's State/Status as "statecode"/"statuscode",
//     also when SetState reaches an Update step through ParentContext;
//     QualifyLead's Status as "statuscode" with "statecode" 1 (Qualified).
//   - ParentMessage: the nearest ParentContext message that differs from the
//     event's own (the same operation's stage-30 parent repeats it).
//   - Version: modifiedon (Unix ms) from the Target or a post image, else
//     OperationCreatedOn. Pre images are never used: their modifiedon is the
//     previous version, which would make a Delete look stale.
//   - OccurredAt: OperationCreatedOn, else modifiedon.
//   - Formatted: FormattedValues of the Target and post images, and of pre
//     images for columns the message did not change (still accurate).
//   - Truncated: the x-ms-dynamics-msg-size-exceeded header.
func Parse(body []byte, h Headers) (*event.Event, error) {
	return parse(body, h, event.SourceWebhook)
}

// ParseServiceBus reads a message of Dataverse's native Service Bus
// integration (message format JSON): the same RemoteExecutionContext body,
// with the Claims application properties in place of the webhook headers and
// MessageMaxSizeExceeded marking the truncated form.
func ParseServiceBus(body []byte, props map[string]string) (*event.Event, error) {
	h := Headers{
		Organization: props[PropOrganization],
		EntityName:   props[PropEntityLogicalName],
		RequestName:  props[PropRequestName],
	}
	if v, ok := props[PropMaxSizeExceeded]; ok {
		h.SizeExceeded = !isFalse(v)
	}
	e, err := parse(body, h, event.SourceServiceBus)
	if e != nil {
		// The claims' value format is unconfirmed; use them only when they are ids.
		if e.UserID == "" && event.IsGUID(props[PropUser]) {
			e.UserID = event.NormalizeID(props[PropUser])
		}
		if e.InitiatingUserID == "" && event.IsGUID(props[PropInitiatingUser]) {
			e.InitiatingUserID = event.NormalizeID(props[PropInitiatingUser])
		}
	}
	return e, err
}

func parse(body []byte, h Headers, source string) (*event.Event, error) {
	if e, err, ok := parseDirect(body, h, source); ok {
		return e, err
	}
	return parseTree(body, h, source)
}

// parseTree is parse through a generic tree: the reference parseDirect must
// agree with, and the path for everything it declines.
func parseTree(body []byte, h Headers, source string) (*event.Event, error) {
	tree, err := decode(body)
	if err != nil {
		return nil, err
	}
	root, ok := tree.(jsonObject)
	if !ok {
		return nil, &event.FieldError{Field: "$", Reason: "must be a JSON object (a RemoteExecutionContext), got " + jsonKind(tree)}
	}
	var errs fieldErrs
	e := &event.Event{
		Schema:    event.SchemaVersion,
		Source:    source,
		Truncated: h.SizeExceeded,
	}
	for _, name := range []string{"MessageName", "PrimaryEntityName"} {
		if v := root.get(name); v != nil {
			if _, isString := v.(string); !isString {
				errs.add(name, "must be a string, got %s", jsonKind(v))
			}
		}
	}
	e.Message = strings.TrimSpace(str(root.get("MessageName")))
	if e.Message == "" {
		e.Message = h.RequestName
	}
	e.Entity = strings.ToLower(strings.TrimSpace(str(root.get("PrimaryEntityName"))))
	if e.Entity == "" {
		e.Entity = strings.ToLower(h.EntityName)
	}
	e.RecordID = guid(root.get("PrimaryEntityId"), "PrimaryEntityId", &errs)
	if e.RecordID == zeroGUID {
		e.RecordID = ""
	}

	e.OrgID = guid(root.get("OrganizationId"), "OrganizationId", &errs)
	e.OrgName = str(root.get("OrganizationName"))
	if e.OrgName == "" {
		e.OrgName = h.Organization
	}
	e.CorrelationID = guid(root.get("CorrelationId"), "CorrelationId", &errs)
	if e.CorrelationID == "" {
		e.CorrelationID = event.NormalizeID(h.CorrelationID)
	}
	e.OperationID = guid(root.get("OperationId"), "OperationId", &errs)
	e.RequestID = guid(root.get("RequestId"), "RequestId", &errs)
	if e.RequestID == "" {
		e.RequestID = event.NormalizeID(h.RequestID)
	}
	e.UserID = guid(root.get("UserId"), "UserId", &errs)
	e.InitiatingUserID = guid(root.get("InitiatingUserId"), "InitiatingUserId", &errs)
	if d, ok := integer(root.get("Depth")); ok && d >= 0 && d < 1<<31 {
		e.Depth = int(d)
	}
	if ext, ok := root.get("OwningExtension").(jsonObject); ok {
		e.StepID = guid(ext.get("Id"), "OwningExtension.Id", &errs)
	}
	var occurred time.Time
	if s, ok := root.get("OperationCreatedOn").(string); ok {
		t, isDate, msg := parseDate(s)
		switch {
		case msg != "":
			errs.add("OperationCreatedOn", "%s", msg)
		case isDate:
			occurred = t
		}
	}

	inputs := paramMap(root.get("InputParameters"))
	target := parseEntity(inputs["Target"], "InputParameters.Target", &errs)
	if target != nil && target.logicalName != "" && e.Entity != "" && target.logicalName != e.Entity {
		// The event must not say one table and carry another's record.
		errs.add("PrimaryEntityName", "%q does not match InputParameters.Target.LogicalName %q", e.Entity, target.logicalName)
		errs.add("InputParameters.Target.LogicalName", "%q does not match PrimaryEntityName %q", target.logicalName, e.Entity)
	}
	if target != nil {
		if e.Entity == "" {
			e.Entity = target.logicalName
		}
		e.RecordID = firstNonEmpty(e.RecordID, target.id)
		if !target.isRef {
			e.Attributes = target.attrs
			e.RowVersion = target.rowVersion
		}
	}
	applyMessageInputs(e, e.Message, inputs, "InputParameters", &errs)
	if e.RecordID == "" {
		if id, ok := paramMap(root.get("OutputParameters"))["id"].(string); ok && event.IsGUID(id) {
			e.RecordID = event.NormalizeID(id)
		}
	}

	// Walk ParentContext: the nearest differing message, and SetState inputs
	// when SetState reached us as an Update.
	parent, _ := root.get("ParentContext").(jsonObject)
	for depth := 0; parent != nil && depth < maxParentDepth; depth++ {
		msg := strings.TrimSpace(str(parent.get("MessageName")))
		if e.ParentMessage == "" && msg != "" && !strings.EqualFold(msg, e.Message) {
			e.ParentMessage = msg
			if isSetState(msg) {
				var ignored fieldErrs // the parent's oddities are not this event's fault
				applyMessageInputs(e, msg, paramMap(parent.get("InputParameters")), "ParentContext.InputParameters", &ignored)
			}
		}
		parent, _ = parent.get("ParentContext").(jsonObject)
	}

	var preFormatted, postFormatted map[string]string
	e.PreImages, preFormatted = images(root.get("PreEntityImages"), "PreEntityImages", &errs)
	e.PostImages, postFormatted = images(root.get("PostEntityImages"), "PostEntityImages", &errs)
	e.Formatted = mergeFormatted(e.Attributes, preFormatted, target, postFormatted)

	// Version and RowVersion: the message's own entity first, then post images.
	modified, haveModified := timeOf(e.Attributes["modifiedon"])
	for _, alias := range sortedKeys(e.PostImages) {
		img := e.PostImages[alias]
		if !haveModified {
			modified, haveModified = timeOf(img["modifiedon"])
		}
	}
	if e.RowVersion == 0 {
		e.RowVersion = postRowVersion(root.get("PostEntityImages"))
	}
	switch {
	case haveModified:
		e.Version = modified.UnixMilli()
	case !occurred.IsZero():
		e.Version = occurred.UnixMilli()
	}
	e.OccurredAt = occurred
	if e.OccurredAt.IsZero() && haveModified {
		e.OccurredAt = modified
	}

	if e.Entity == "" && !hasErr(errs, "PrimaryEntityName") {
		errs.add("PrimaryEntityName", "is required")
	}
	if e.RecordID == "" && !hasErr(errs, "PrimaryEntityId") {
		errs.add("PrimaryEntityId", "is required")
	}
	if e.Message == "" && !hasErr(errs, "MessageName") {
		errs.add("MessageName", "is required")
	}
	if err := errs.err(); err != nil {
		return e, err
	}
	e.ID = e.DeriveID()
	return e, nil
}

// applyMessageInputs maps the inputs of messages that carry their change in
// parameters rather than in a Target entity.
func applyMessageInputs(e *event.Event, message string, inputs map[string]any, path string, errs *fieldErrs) {
	set := func(col string, v event.Value) {
		if e.Attributes == nil {
			e.Attributes = event.Attributes{}
		}
		if _, exists := e.Attributes[col]; !exists {
			e.Attributes[col] = v
		}
	}
	option := func(name, col string) {
		raw, ok := inputs[name]
		if !ok {
			return
		}
		v := value(raw, path+"."+name, errs)
		if v.Kind == event.KindNumber { // State/Status sent as a bare int
			if i, ok := v.Int(); ok {
				v = event.Option(int(i))
			}
		}
		if v.Kind == event.KindOption {
			set(col, v)
		}
	}
	// refID takes the record from a reference input; false when the input
	// names another record than the event's (a parent's moniker).
	refID := func(name string) bool {
		ref := parseEntity(inputs[name], path+"."+name, errs)
		if ref == nil {
			return true
		}
		if e.RecordID != "" && ref.id != "" && ref.id != e.RecordID {
			return false
		}
		if e.Entity == "" {
			e.Entity = ref.logicalName
		}
		if e.RecordID == "" {
			e.RecordID = ref.id
		}
		return true
	}
	switch {
	case strings.EqualFold(message, event.MessageAssign):
		if v := value(inputs["Assignee"], path+".Assignee", errs); v.Kind == event.KindRef {
			set("ownerid", v)
		}
	case isSetState(message):
		if !refID("EntityMoniker") {
			return
		}
		option("State", "statecode")
		option("Status", "statuscode")
	case strings.EqualFold(message, event.MessageMerge):
		// Target is the master (a reference); SubordinateId the record merged
		// into it; UpdateContent the columns taken from the subordinate.
		if v, ok := inputs["SubordinateId"]; ok {
			e.SubordinateID = guid(v, path+".SubordinateId", errs)
		}
		if uc := parseEntity(inputs["UpdateContent"], path+".UpdateContent", errs); uc != nil && !uc.isRef {
			for c, v := range uc.attrs {
				set(c, v)
			}
		}
	case strings.EqualFold(message, event.MessageQualifyLead):
		if !refID("LeadId") {
			return
		}
		option("Status", "statuscode")
		if _, ok := inputs["LeadId"]; ok {
			set("statecode", event.Option(1)) // lead statecode 1 = Qualified
		}
	}
}

func isSetState(m string) bool {
	return strings.EqualFold(m, event.MessageSetState) || strings.EqualFold(m, event.MessageSetStateDynamicEntity)
}

// paramMap reads a ParameterCollection into a map.
func paramMap(v any) map[string]any {
	ps := pairs(v)
	if len(ps) == 0 {
		return nil
	}
	m := make(map[string]any, len(ps))
	for _, p := range ps {
		m[p.key] = p.value
	}
	return m
}

// images reads an EntityImageCollection (alias → entity without __type).
func images(v any, path string, errs *fieldErrs) (map[string]event.Attributes, map[string]string) {
	ps := pairs(v)
	if len(ps) == 0 {
		return nil, nil
	}
	out := make(map[string]event.Attributes, len(ps))
	var formatted map[string]string
	for _, p := range ps {
		en := parseEntity(p.value, path+"."+p.key, errs)
		if en == nil {
			continue
		}
		attrs := en.attrs
		if attrs == nil {
			attrs = event.Attributes{}
		}
		out[p.key] = attrs
		for k, s := range en.formatted {
			if formatted == nil {
				formatted = make(map[string]string)
			}
			formatted[k] = s
		}
	}
	if len(out) == 0 {
		return nil, formatted
	}
	return out, formatted
}

// mergeFormatted combines display strings: the Target's and the post
// images', and the pre images' only for columns the message did not change
// (for a changed column the pre-image label is stale).
func mergeFormatted(changed event.Attributes, pre map[string]string, target *entity, post map[string]string) map[string]string {
	out := make(map[string]string)
	for k, s := range pre {
		if _, isChanged := changed[k]; !isChanged {
			out[k] = s
		}
	}
	if target != nil {
		for k, s := range target.formatted {
			out[k] = s
		}
	}
	for k, s := range post {
		out[k] = s
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// postRowVersion returns the first numeric RowVersion of a post image.
func postRowVersion(v any) int64 {
	for _, p := range pairs(v) {
		if m, ok := p.value.(jsonObject); ok {
			if rv, ok := integer(m.get("RowVersion")); ok {
				return rv
			}
		}
	}
	return 0
}

func timeOf(v event.Value) (time.Time, bool) {
	if v.Kind == event.KindTime && v.Time != nil {
		return *v.Time, true
	}
	return time.Time{}, false
}

func sortedKeys(m map[string]event.Attributes) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func firstNonEmpty(s ...string) string {
	for _, x := range s {
		if x != "" {
			return x
		}
	}
	return ""
}

func hasErr(errs fieldErrs, field string) bool {
	for _, err := range errs {
		if fe, ok := err.(*event.FieldError); ok && fe.Field == field {
			return true
		}
	}
	return false
}
