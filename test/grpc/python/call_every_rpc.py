"""Calls every RPC of recserve.v1.RecommendationService with stubs that grpc_tools.protoc
generated from proto/recserve/v1/*.proto (a toolchain independent of the server's), and
prints one JSON object describing what came back. Used by test/grpc/python-client.test.ts.

usage: call_every_rpc.py STUBS_DIR ADDRESS USER_ID ITEM_ID TIMESTAMP
"""
import json
import sys

sys.path.insert(0, sys.argv[1])
address, user_id, item_id, ts = sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]

import grpc  # noqa: E402
from recserve.v1 import recommendation_pb2 as pb  # noqa: E402
from recserve.v1 import recommendation_pb2_grpc as rpc  # noqa: E402

out = {}
with grpc.insecure_channel(address) as channel:
    stub = rpc.RecommendationServiceStub(channel)

    rec = stub.GetRecommendations(
        pb.RecommendationRequest(
            user_id=user_id,
            num_items=5,
            context=pb.RequestContext(device_type="mobile", location=pb.Location(country="US")),
            filters=pb.Filters(min_quality_score=0.0),
        ),
        timeout=30,
    )
    out["recommendations"] = [
        {"item_id": r.item_id, "score": r.score, "rank": r.rank, "reason": r.explanation.reason}
        for r in rec.recommendations
    ]
    out["model_version"] = rec.metadata.model_version
    out["latency_total_present"] = "total" in rec.metadata.latency_ms

    sim = stub.GetSimilarItems(
        pb.SimilarRequest(item_id=item_id, num_items=4, similarity_type="content"), timeout=30
    )
    out["similar"] = [[s.item_id, s.similarity_score] for s in sim.similar_items]
    out["source_item"] = sim.source_item

    fb = stub.RecordFeedback(
        pb.FeedbackRequest(
            user_id=user_id,
            events=[
                pb.FeedbackEvent(
                    item_id=item_id,
                    event_type="click",
                    timestamp=ts,
                    context=pb.FeedbackContext(position=3, surface="home_feed"),
                ),
                pb.FeedbackEvent(
                    item_id=item_id, event_type="view", timestamp=ts, duration_seconds=120,
                    completion_rate=0.75,
                ),
            ],
        ),
        timeout=30,
    )
    out["feedback"] = [fb.status, fb.events_processed, fb.duplicates_ignored]

    def batches():
        # The first repeats the batch above: its events are duplicates.
        yield pb.FeedbackRequest(user_id=user_id, events=[pb.FeedbackEvent(item_id=item_id, event_type="click", timestamp=ts)])
        yield pb.FeedbackRequest(user_id=user_id, events=[pb.FeedbackEvent(item_id=item_id, event_type="share", timestamp=ts)])

    st = stub.StreamFeedback(batches(), timeout=30)
    out["stream"] = [st.status, st.events_processed, st.duplicates_ignored]

    neg = stub.RecordNegativeFeedback(
        pb.NegativeFeedbackRequest(user_id=user_id, item_id=item_id, feedback_type="hide", reason="seen"),
        timeout=30,
    )
    out["negative"] = [neg.status, neg.action_taken]

    try:
        stub.GetRecommendations(pb.RecommendationRequest(user_id=user_id, num_items=0), timeout=30)
        out["error"] = None
    except grpc.RpcError as e:
        trailers = dict(e.trailing_metadata() or ())
        out["error"] = {
            "status": e.code().name,
            "details": e.details(),
            "code": trailers.get("recserve-error-code"),
            "field": trailers.get("recserve-error-field"),
        }

print(json.dumps(out))
