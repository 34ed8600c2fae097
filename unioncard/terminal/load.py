"""Loads (圈存): crediting a purse, authorized by the load host (JR/T 0025 load).

The flow (docs/protocol.md §1, §2):

1. the card is read and its pending transactions resolved (a load interrupted
   after CREDIT is settled from the card's online seq and log);
2. INITIALIZE FOR LOAD with the amount: the card answers its balance, online
   seq, key version, a random and its MAC1 (``9402``: the balance would pass
   the purse maximum);
3. the load host (`unioncard.terminal.load_host.LoadHost`) checks MAC1 and
   gives MAC2;
4. the load is journaled as pending, then CREDIT FOR LOAD is sent;
5. the card answers the TAC, kept for settlement with the offline record.
"""

from __future__ import annotations

from typing import Any

from unioncard.apdu import SW
from unioncard.apdu import purse as cmd
from unioncard.apdu.member import MemberRecord
from unioncard.apdu.purse import TransactionType
from unioncard.apdu.status import describe as describe_sw
from unioncard.offline import Application, OfflineRecord
from unioncard.terminal.card import PurseCard, card_send, member_dict, parse_answer
from unioncard.terminal.load_host import LoadAuthorization, LoadRequest
from unioncard.terminal.purchase import PurseSession
from unioncard.terminal.session import (
    Authorize,
    Decision,
    Flow,
    Journal,
    Outcome,
    PendingTransaction,
    Refused,
)

__all__ = ["Load"]


class Load(PurseSession):
    """Load ``amount`` fen onto the ``application`` purse; ``terminal_id`` is required
    (a load point may have no PSAM).

    A union payment (`unioncard.terminal.disbursements`) is loaded with its journal
    number as ``disbursement`` and its member's number as ``member_no``: a card of
    another member (or without a member application) is declined, and the payment
    is journaled with the load, so it is loaded exactly when the load completes.
    """

    flow_name = "load"

    def __init__(self, application: Application, amount: int, *, terminal_id: bytes,
                 member_no: str | None = None, disbursement: int | None = None,
                 **options: Any) -> None:
        super().__init__(terminal_id=terminal_id, **options)
        if not isinstance(amount, int) or amount <= 0:
            raise ValueError("a load is a positive integer of fen")
        if disbursement is not None and member_no is None:
            raise ValueError("a disbursement is loaded onto its member's card: give member_no")
        self.application = Application(application)
        self.amount = amount
        self.member_no = member_no
        self.disbursement = disbursement

    def same_sale(self, draft: OfflineRecord) -> bool:
        return draft.charged_amount == self.amount

    def transact(self, card: PurseCard, member: MemberRecord | None) -> Flow:
        assert self.terminal_id is not None
        details: dict[str, Any] = {"card": card.to_dict()}
        if member is not None:
            details["member"] = member_dict(member)
        if self.member_no is not None and (member is None or member.member_no != self.member_no):
            whose = "no member application" if member is None \
                else f"the card of member {member.member_no}"
            raise Refused(f"this load is for member {self.member_no}; this is {whose}",
                          details=details)
        answer = yield card_send(cmd.initialize_for_load(self.amount, self.terminal_id),
                                 "INITIALIZE FOR LOAD")
        if answer.sw == SW.COUNTER_OVERFLOW:
            raise Refused(f"the card refuses to load {self.amount} fen: the balance would pass "
                          "the purse maximum (or its load counter is exhausted)",
                          details=details)
        if answer.sw in (SW.CONDITIONS_NOT_SATISFIED, SW.APPLICATION_LOCKED):
            raise Refused("the purse is blocked" if answer.sw == SW.CONDITIONS_NOT_SATISFIED
                          else "the purse is locked for good", details=details)
        if answer.sw != SW.OK:
            raise Refused(f"the card refused the load: {answer.sw:04X} "
                          f"({describe_sw(answer.sw)})", Decision.ERROR, details=details)
        init = parse_answer(answer, "INITIALIZE FOR LOAD", cmd.INIT_LOAD_RESPONSE)
        authorization: LoadAuthorization = yield Authorize(LoadRequest(
            key_version=init.key_version, diversifier=card.diversifier, balance=init.balance,
            online_seq=init.online_seq, random=init.random, amount=self.amount,
            terminal_id=self.terminal_id, when=self.now, mac1=init.mac1, issuer=card.issuer))
        if not authorization.approved:
            raise Refused(f"the load host refused: {authorization.reason}",
                          balance_before=init.balance, details=details)
        balance_after = init.balance + self.amount
        pending = PendingTransaction(self.flow_name, self.draft(
            card, member, None, None, card_seq=init.online_seq, key_version=init.key_version,
            tx_type=TransactionType.EP_LOAD, amount=self.amount, balance_after=balance_after,
            terminal_seq=0), init.balance, disbursement=self.disbursement)
        pending = pending.journaled((yield Journal(begin=pending)))
        self.in_flight = True
        credit = yield card_send(cmd.credit_for_load(self.date, self.time, authorization.mac2),
                                 "CREDIT FOR LOAD")
        common: dict[str, Any] = dict(list_amount=self.amount, balance_before=init.balance,
                                      details=details)
        if credit.sw != SW.OK:
            self.in_flight = False
            reason = ("the card refused the host's MAC2 (9302)" if credit.sw == SW.MAC_ERROR
                      else f"the card refused the credit: {credit.sw:04X} "
                           f"({describe_sw(credit.sw)})")
            raise Refused(f"{reason}; nothing was loaded", Decision.DECLINED,
                          resolutions=(pending.voided(reason),), **common)
        tac = parse_answer(credit, "CREDIT FOR LOAD", cmd.CREDIT_FOR_LOAD_RESPONSE).tac
        self.in_flight = False
        completed = pending.completed(tac)
        return Outcome(self.flow_name, Decision.APPROVED,
                       f"loaded {self.amount} fen onto the {card.name} purse",
                       charged_amount=self.amount, balance_after=balance_after, tac=tac,
                       record=completed.record, resolutions=(completed,),
                       journal_id=pending.id, **common)
