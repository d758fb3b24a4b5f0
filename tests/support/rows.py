"""The smallest valid scoring row (column -> text): fan u1, rank 0, campaign c1."""

MINIMAL_ROW: dict[str, str] = {
    "globalUserId": "u1",
    "id": "u1000",
    "campaign_id": "c1",
    "event_id": "ev1",
    "score": "0.5",
    "isVerified": "true",
}
