#!/usr/bin/python3
"""A wire-level test broker speaking the subset of Azure Service Bus's AMQP 1.0
protocol msisync uses, built on Qpid Proton (Debian: python3-qpid-proton).

It lets the real azservicebus client run over a real socket in CI. Covered:
SASL ANONYMOUS; $cbs put-token (any token is accepted); one queue per address
and its $DeadLetterQueue; batch sends (message format 0x80013700, one data
section per message); the link's max-message-size (the SDK sizes batches by
it) and amqp:link:message-size-exceeded; peek-lock deliveries whose
delivery-tag is the lock token, with x-opt-lock-token, -locked-until,
-sequence-number and -enqueued-time; dispositions (accepted = complete,
released = unlock, modified = abandon with annotations merged into the
application properties, rejected with com.microsoft:dead-letter info);
settling an expired lock answers com.microsoft:message-lock-lost; $management
operations renew-lock, peek-message, update-disposition (settle by lock token)
and schedule-message; x-opt-scheduled-enqueue-time; message-id duplicate
detection within a window; max delivery count -> dead-letter with
MaxDeliveryCountExceeded. Not covered: sessions, partitioning, transactions,
TTL, deferral, filters, the HTTP (ATOM) management API.

Time is the wall clock plus an offset the test moves: write "advance <seconds>"
on stdin and wait for "ok" on stdout. "counts <queue>" answers
"active scheduled dead". The broker prints "ready <port>" once it listens.

Usage: sbbroker.py --port N [--lock-duration S] [--max-delivery N]
       [--dup-window S] [--max-message-size BYTES]
       [--advertise-max-message-size BYTES] [--partitioned]
"""

import argparse
import secrets
import sys
import threading
import time
import uuid

from proton import (Array, Condition, Data, Delivery, Described, Endpoint,
                    Link, Message, UNDESCRIBED, int32, symbol, timestamp, ulong)
from proton.handlers import MessagingHandler
from proton.reactor import Container

BATCH_FORMAT = 0x80013700
MGMT = "$management"
DLQ = "/$DeadLetterQueue"


class Clock:
    def __init__(self):
        self.offset = 0.0
        self.lock = threading.Lock()

    def now(self):
        with self.lock:
            return time.time() + self.offset

    def advance(self, s):
        with self.lock:
            self.offset += s


def ts(t):
    return timestamp(int(t * 1000))


def new_lock_token():
    # The delivery tag is the lock token (16 bytes, as on Service Bus), but
    # Proton's Python binding takes tags as C strings: the token's bytes are
    # drawn from printable ASCII so the tag survives the binding intact.
    return bytes(secrets.choice(range(0x21, 0x7F)) for _ in range(16))


def is_message(b):
    if len(b) < 3 or b[0] != 0 or b[1] != 0x53 or not 0x70 <= b[2] <= 0x78:
        return False
    try:
        Message().decode(b)
        return True
    except Exception:
        return False


def lock_tokens(body):
    v = body.get("lock-tokens") or []
    if isinstance(v, Array):
        v = v.elements
    return [t.bytes if isinstance(t, uuid.UUID) else bytes(t) for t in v]


def id_key(mid):
    return (type(mid).__name__, mid)


class Msg:
    """One message as stored: the decoded proton Message plus broker state."""

    def __init__(self, m, seq, now):
        self.m = m
        self.seq = seq
        self.enqueued = now
        self.visible_at = now
        self.deliveries = 0
        self.lock = None  # lock token bytes while locked
        self.locked_until = 0.0
        self.dlv = None  # unsettled link delivery holding the lock, if any


class Entity:
    def __init__(self, name, is_dlq):
        self.name = name
        self.is_dlq = is_dlq
        self.msgs = []  # sequence order
        self.consumers = []  # sender links, round robin


class Broker(MessagingHandler):
    def __init__(self, args, clock):
        super().__init__(prefetch=0, auto_accept=False, auto_settle=False, peer_close_is_error=False)
        self.args = args
        self.clock = clock
        self.entities = {}
        self.seq = 0
        self.seen = {}  # (queue, id key) -> time first seen
        self.replies = {}  # reply address -> sender link
        self.locks = {}  # lock token bytes -> (entity, Msg)
        self.cmd_lock = threading.Lock()

    # --- entities ---

    def entity(self, address):
        address = address.strip("/")
        e = self.entities.get(address)
        if e is None:
            e = Entity(address, address.endswith(DLQ))
            self.entities[address] = e
        return e

    def dlq_of(self, e):
        return self.entity(e.name + DLQ)

    def expire(self):
        now = self.clock.now()
        for e in list(self.entities.values()):
            for m in list(e.msgs):
                if m.lock is not None and m.locked_until <= now:
                    self.unlock(e, m)
                    if not e.is_dlq and m.deliveries >= self.args.max_delivery:
                        self.dead_letter(e, m, "MaxDeliveryCountExceeded",
                                         "Message could not be consumed after %d delivery attempts." % self.args.max_delivery)

    def unlock(self, e, m):
        if m.lock is not None:
            self.locks.pop(m.lock, None)
        m.lock = None
        m.dlv = None

    def dead_letter(self, e, m, reason, description, props=None):
        self.unlock(e, m)
        e.msgs.remove(m)
        ap = dict(m.m.properties or {})
        if props:
            ap.update(props)
        ap["DeadLetterReason"] = reason
        ap["DeadLetterErrorDescription"] = description
        m.m.properties = ap
        d = self.dlq_of(e)
        d.msgs.append(m)
        d.msgs.sort(key=lambda x: x.seq)

    # --- connection set-up ---

    def on_start(self, event):
        self.container = event.container
        event.container.listen("127.0.0.1:%d" % self.args.port)
        event.container.schedule(0.02, self)
        print("ready %d" % self.args.port, flush=True)

    def on_timer_task(self, event):
        self.pump()
        event.container.schedule(0.02, self)

    def on_connection_bound(self, event):
        # The broker only accepts connections, so every transport is a server's.
        sasl = event.transport.sasl()
        sasl.allowed_mechs("ANONYMOUS")

    def on_link_opening(self, event):
        link = event.link
        if link.is_sender:
            addr = link.remote_source.address or ""
            link.source.address = addr
            link.target.address = link.remote_target.address
            link.snd_settle_mode = link.remote_snd_settle_mode
            link.rcv_settle_mode = link.remote_rcv_settle_mode
            if link.remote_target.address and (MGMT in addr or addr.startswith("$cbs")):
                self.replies[link.remote_target.address] = link
            else:
                self.entity(addr).consumers.append(link)
        else:
            addr = link.remote_target.address or ""
            link.target.address = addr
            link.source.address = link.remote_source.address
            if MGMT not in addr and not addr.startswith("$cbs"):
                adv = self.args.advertise_max_message_size
                link.max_message_size = self.args.max_message_size if adv is None else adv
            link.flow(1000)
        link.open()

    def forget_link(self, link):
        for e in self.entities.values():
            if link in e.consumers:
                e.consumers.remove(link)
                # Locks live on the broker, not the link: the message stays
                # locked until settled by token or expired, as on Service Bus.
                for m in e.msgs:
                    if m.dlv is not None and m.dlv.link == link:
                        m.dlv = None
        for k, v in list(self.replies.items()):
            if v == link:
                del self.replies[k]

    def on_link_closing(self, event):
        self.forget_link(event.link)
        event.link.close()

    def on_connection_closing(self, event):
        link = event.connection.link_head(0)
        while link:
            self.forget_link(link)
            link = link.next(0)

    def on_disconnected(self, event):
        if event.connection:
            link = event.connection.link_head(0)
            while link:
                self.forget_link(link)
                link = link.next(0)

    # --- deliveries in ---

    def on_delivery(self, event):
        dlv = event.delivery
        link = dlv.link
        if link.is_receiver:
            if dlv.readable and not dlv.partial:
                self.incoming(link, dlv)
        else:
            if dlv.updated:
                self.outcome(link, dlv)
        self.pump()

    def incoming(self, link, dlv):
        raw = link.recv(dlv.pending)
        link.advance()
        addr = link.target.address or ""
        try:
            if addr.startswith("$cbs"):
                req = Message()
                req.decode(raw)
                self.reply(req, 202, "Accepted", None)
                state = Delivery.ACCEPTED
            elif MGMT in addr:
                req = Message()
                req.decode(raw)
                self.management(addr[: addr.index(MGMT)], req)
                state = Delivery.ACCEPTED
            else:
                if len(raw) > self.args.max_message_size:
                    dlv.local.condition = Condition("amqp:link:message-size-exceeded",
                                                    "The received message (delivery-id:0, size:%d bytes) exceeds the limit (%d bytes) currently allowed on the link." % (len(raw), self.args.max_message_size))
                    state = Delivery.REJECTED
                else:
                    msgs = self.split(raw, 0)
                    err = self.enqueue(self.entity(addr), msgs)
                    if err:
                        dlv.local.condition = err
                        state = Delivery.REJECTED
                    else:
                        state = Delivery.ACCEPTED
        except Exception as ex:  # a broker bug must show, not hang the client
            print("sbbroker: %s: %r" % (addr, ex), file=sys.stderr, flush=True)
            dlv.local.condition = Condition("amqp:internal-error", repr(ex))
            state = Delivery.REJECTED
        dlv.update(state)
        dlv.settle()
        if link.credit < 100:
            link.flow(1000)

    def split(self, raw, fmt):
        """Decode a delivery into messages: a batch envelope's data sections
        are one encoded message each."""
        sections = []
        pos = 0
        while pos < len(raw):
            d = Data()
            n = d.decode(raw[pos:])
            d.rewind()
            d.next()
            sections.append(d.get_object())
            pos += n
        datas = [bytes(s.value) for s in sections if isinstance(s, Described) and s.descriptor == ulong(0x75)]
        # Proton's Python binding does not expose the transfer's
        # message-format, so a batch (0x80013700) is recognised by its data
        # sections each holding an encoded message, as the SDK sends them.
        if fmt == BATCH_FORMAT or (datas and all(is_message(b) for b in datas)):
            out = []
            for b in datas:
                m = Message()
                m.decode(bytes(b))
                out.append(m)
            return out
        m = Message()
        m.decode(raw)
        return [m]

    def enqueue(self, e, msgs):
        now = self.clock.now()
        if self.args.partitioned and len(msgs) > 1:
            ids = {id_key(m.id) for m in msgs}
            if len(ids) > 1:
                return Condition("amqp:not-allowed",
                                 "Batching brokered messages with distinct MessageId is not supported for entities that have duplicate detection enabled.")
        for m in msgs:
            if self.args.dup_window > 0 and m.id is not None:
                k = (e.name, id_key(m.id))
                at = self.seen.get(k)
                if at is not None and now - at < self.args.dup_window:
                    continue  # accepted and dropped, as Service Bus does
                self.seen[k] = now
            self.seq += 1
            sm = Msg(m, self.seq, now)
            ann = m.annotations or {}
            when = ann.get(symbol("x-opt-scheduled-enqueue-time"))
            if when is not None:
                sm.visible_at = max(now, int(when) / 1000.0)
            e.msgs.append(sm)
        return None

    # --- deliveries out ---

    def pump(self):
        self.expire()
        now = self.clock.now()
        for e in list(self.entities.values()):
            for link in list(e.consumers):
                if link.state & Endpoint.LOCAL_CLOSED:
                    continue
                while link.credit > 0:
                    m = next((x for x in e.msgs if x.lock is None and x.visible_at <= now), None)
                    if m is None:
                        break
                    self.deliver(e, link, m, now)

    def out_message(self, e, m, lock_token=None):
        out = Message()
        out.decode(m.m.encode())
        out.inferred = m.m.inferred
        ann = dict(out.annotations or {})
        ann[symbol("x-opt-sequence-number")] = m.seq
        ann[symbol("x-opt-enqueued-time")] = ts(m.enqueued)
        if lock_token is not None:
            ann[symbol("x-opt-locked-until")] = ts(m.locked_until)
            out.instructions = {symbol("x-opt-lock-token"): uuid.UUID(bytes=lock_token)}
        out.annotations = ann
        out.delivery_count = max(m.deliveries - 1, 0)
        return out

    def deliver(self, e, link, m, now):
        tok = new_lock_token()
        m.lock = tok
        m.locked_until = now + self.args.lock_duration
        if not e.is_dlq:
            m.deliveries += 1
        self.locks[tok] = (e, m)
        out = self.out_message(e, m, tok)
        dlv = link.delivery(tok.decode("ascii"))
        link.send(out.encode())
        link.advance()
        m.dlv = dlv

    def outcome(self, link, dlv):
        tag = dlv.tag
        tok = tag.encode("latin-1") if isinstance(tag, str) else bytes(tag)
        self.expire()
        held = self.locks.get(tok)
        if held is None or held[1].lock != tok:
            if dlv.remote_state != Delivery.RELEASED:
                dlv.local.condition = Condition("com.microsoft:message-lock-lost",
                                                "The lock supplied is invalid. Either the lock expired, or the message has already been removed from the queue.")
                dlv.update(Delivery.REJECTED)
            dlv.settle()
            return
        e, m = held
        state = dlv.remote_state
        if state == Delivery.ACCEPTED:
            self.settle(e, m, "completed")
        elif state == Delivery.RELEASED:
            # Released: never delivered as far as the count goes.
            if not e.is_dlq:
                m.deliveries -= 1
            self.unlock(e, m)
        elif state == Delivery.MODIFIED:
            self.settle(e, m, "abandoned", props=dlv.remote.annotations)
        elif state == Delivery.REJECTED:
            cond = dlv.remote.condition
            info = dict(cond.info or {}) if cond is not None else {}
            reason = info.pop("DeadLetterReason", "")
            desc = info.pop("DeadLetterErrorDescription", "")
            self.settle(e, m, "suspended", reason, desc, info)
        dlv.update(state)
        dlv.settle()

    def settle(self, e, m, status, reason=None, desc=None, props=None):
        if status == "completed":
            self.unlock(e, m)
            e.msgs.remove(m)
        elif status == "abandoned":
            self.unlock(e, m)
            if props:
                ap = dict(m.m.properties or {})
                ap.update({str(k): v for k, v in props.items()})
                m.m.properties = ap
            if not e.is_dlq and m.deliveries >= self.args.max_delivery:
                self.dead_letter(e, m, "MaxDeliveryCountExceeded",
                                 "Message could not be consumed after %d delivery attempts." % self.args.max_delivery)
        elif status == "suspended":
            if e.is_dlq:
                raise ValueError("cannot dead-letter a message in the dead-letter queue")
            p = {str(k): v for k, v in (props or {}).items()}
            self.dead_letter(e, m, reason or "", desc or "", p)
        else:
            raise ValueError("unsupported disposition-status %r" % status)

    # --- $management ---

    def reply(self, req, code, desc, body):
        link = self.replies.get(req.reply_to)
        if link is None:
            return
        out = Message()
        out.correlation_id = req.id
        out.properties = {"statusCode": int32(code), "statusDescription": desc}
        if body is not None:
            out.body = body
        dlv = link.delivery(link.delivery_tag())
        link.send(out.encode())
        link.advance()
        dlv.settle()

    def management(self, entity_addr, req):
        op = (req.properties or {}).get("operation")
        body = req.body or {}
        e = self.entity(entity_addr)
        self.expire()
        try:
            if op == "com.microsoft:peek-message":
                frm = int(body.get("from-sequence-number", 1))
                n = int(body.get("message-count", 1))
                now = self.clock.now()
                ms = [m for m in sorted(e.msgs, key=lambda x: x.seq) if m.seq >= frm][:n]
                if not ms:
                    return self.reply(req, 204, "No messages", None)
                out = []
                for m in ms:
                    pm = self.out_message(e, m)
                    if m.visible_at > now:
                        pm.annotations = dict(pm.annotations, **{symbol("x-opt-message-state"): 2})
                    out.append({"message": pm.encode()})
                return self.reply(req, 200, "OK", {"messages": out})
            if op == "com.microsoft:renew-lock":
                exps = []
                now = self.clock.now()
                for t in lock_tokens(body):
                    held = self.locks.get(t)
                    if held is None:
                        return self.reply(req, 410, "The lock supplied is invalid. Either the lock expired, or the message has already been removed from the queue.", None)
                    held[1].locked_until = now + self.args.lock_duration
                    exps.append(ts(held[1].locked_until))
                return self.reply(req, 200, "OK", {"expirations": Array(UNDESCRIBED, Data.TIMESTAMP, *exps)})
            if op == "com.microsoft:update-disposition":
                status = body.get("disposition-status")
                for t in lock_tokens(body):
                    held = self.locks.get(t)
                    if held is None:
                        return self.reply(req, 410, "The lock supplied is invalid. Either the lock expired, or the message has already been removed from the queue.", None)
                    he, m = held
                    dlv = m.dlv
                    self.settle(he, m, status, body.get("deadletter-reason"), body.get("deadletter-description"),
                                body.get("properties-to-modify"))
                    if dlv is not None and not dlv.settled:
                        dlv.update(Delivery.ACCEPTED if status == "completed" else Delivery.RELEASED)
                        dlv.settle()
                return self.reply(req, 200, "OK", None)
            if op == "com.microsoft:schedule-message":
                seqs = []
                for entry in body.get("messages", []):
                    m = Message()
                    m.decode(bytes(entry["message"]))
                    before = self.seq
                    self.enqueue(e, [m])
                    seqs.append(self.seq if self.seq != before else 0)
                return self.reply(req, 200, "OK", {"sequence-numbers": Array(UNDESCRIBED, Data.LONG, *seqs)})
            return self.reply(req, 501, "operation %r is not supported by the test broker" % op, None)
        except Exception as ex:
            print("sbbroker: management %s: %r" % (op, ex), file=sys.stderr, flush=True)
            return self.reply(req, 500, repr(ex), None)

    # --- test control (stdin) ---

    def counts(self, name):
        now = self.clock.now()
        e = self.entities.get(name)
        active = scheduled = 0
        for m in (e.msgs if e else []):
            if m.lock is None and m.visible_at > now:
                scheduled += 1
            else:
                active += 1
        d = self.entities.get(name + DLQ)
        return "%d %d %d" % (active, scheduled, len(d.msgs) if d else 0)


def control(broker, clock):
    for line in sys.stdin:
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "advance":
            clock.advance(float(parts[1]))
            print("ok", flush=True)
        elif parts[0] == "counts":
            # Read without the reactor: a stale count is fine for a test.
            try:
                print(broker.counts(parts[1]), flush=True)
            except Exception as ex:
                print("error %r" % ex, flush=True)
        else:
            print("error unknown command", flush=True)
    # stdin closed: the test is gone.
    import os
    os._exit(0)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--lock-duration", type=float, default=60)
    p.add_argument("--max-delivery", type=int, default=10)
    p.add_argument("--dup-window", type=float, default=0)
    p.add_argument("--max-message-size", type=int, default=256 * 1024)
    # What the link's attach advertises when it differs from what is
    # enforced, so a test can reach the broker's own size check.
    p.add_argument("--advertise-max-message-size", type=int, default=None)
    p.add_argument("--partitioned", action="store_true")
    args = p.parse_args()
    clock = Clock()
    broker = Broker(args, clock)
    threading.Thread(target=control, args=(broker, clock), daemon=True).start()
    Container(broker).run()


if __name__ == "__main__":
    main()
