// The few places where the proto messages and the JSON contract differ in shape, converted
// both ways. Requests need no conversion on the server (a decoded request already has the
// JSON shape: see proto.ts); responses need three things:
// - JSON null (experiment_id, variant) is "field absent" in proto3;
// - the open `metadata` object of a recommendation is typed keys + string `attributes`;
// - proto3 leaves out zero values and empty lists when decoding (defaults: false), which the
//   client puts back so the SDK returns the same objects over either transport.
import type {
  FeedbackResponse,
  NegativeFeedbackResponse,
  Recommendation,
  RecommendationResponse,
  SimilarItem,
  SimilarResponse,
} from '../../api/types.js';

type Obj = Record<string, unknown>;

const TYPED_METADATA = new Set(['title', 'categories', 'creator_id']);

function metadataToWire(m: Recommendation['metadata'] | undefined): Obj {
  const out: Obj = {};
  if (!m) return out;
  if (typeof m.title === 'string') out.title = m.title;
  if (Array.isArray(m.categories)) out.categories = m.categories;
  if (typeof m.creator_id === 'string') out.creator_id = m.creator_id;
  let attributes: Record<string, string> | undefined;
  for (const [k, v] of Object.entries(m)) {
    if (TYPED_METADATA.has(k) || v === undefined) continue;
    attributes ??= {};
    attributes[k] = typeof v === 'string' ? v : JSON.stringify(v);
  }
  if (attributes) out.attributes = attributes;
  return out;
}

/** The response without its item list: request id and metadata. */
export function recommendationHeadToWire(r: RecommendationResponse): Obj {
  const md = r.metadata;
  const wireMd: Obj = {
    model_version: md.model_version,
    retrieval_sources: md.retrieval_sources,
    latency_ms: md.latency_ms,
  };
  if (md.experiment_id != null) wireMd.experiment_id = md.experiment_id;
  if (md.variant != null) wireMd.variant = md.variant;
  if (md.cold_start !== undefined) wireMd.cold_start = md.cold_start;
  if (md.cache_hit !== undefined) wireMd.cache_hit = md.cache_hit;
  if (md.ranking_fallback !== undefined) wireMd.ranking_fallback = md.ranking_fallback;
  if (md.degraded !== undefined) wireMd.degraded = md.degraded;
  return { request_id: r.request_id, metadata: wireMd };
}

export function recommendationsToWire(recs: Recommendation[]): Obj[] {
  return recs.map((x) => ({
    item_id: x.item_id,
    score: x.score,
    rank: x.rank,
    explanation: x.explanation,
    metadata: metadataToWire(x.metadata),
  }));
}

export function recommendationResponseToWire(r: RecommendationResponse): Obj {
  const head = recommendationHeadToWire(r);
  head.recommendations = recommendationsToWire(r.recommendations);
  return head;
}

// Similar, feedback and negative-feedback responses already have the proto's shape.
export function similarResponseToWire(r: SimilarResponse): Obj {
  return r as unknown as Obj;
}

// ---- client side: wire → JSON contract ------------------------------------------------

function obj(v: unknown): Obj {
  return typeof v === 'object' && v !== null ? (v as Obj) : {};
}
function str(v: unknown): string {
  return typeof v === 'string' ? v : '';
}
function num(v: unknown): number {
  return typeof v === 'number' ? v : 0;
}
function strs(v: unknown): string[] {
  return Array.isArray(v) ? (v as string[]) : [];
}

function metadataFromWire(v: unknown): Recommendation['metadata'] {
  const m = obj(v);
  const out: Recommendation['metadata'] = {};
  if (typeof m.title === 'string') out.title = m.title;
  if (Array.isArray(m.categories)) out.categories = m.categories as string[];
  if (typeof m.creator_id === 'string') out.creator_id = m.creator_id;
  for (const [k, val] of Object.entries(obj(m.attributes))) out[k] = val;
  return out;
}

export function recommendationResponseFromWire(v: unknown): RecommendationResponse {
  const r = obj(v);
  const md = obj(r.metadata);
  const lat = obj(md.latency_ms) as Record<string, number>;
  const out: RecommendationResponse = {
    request_id: str(r.request_id),
    recommendations: (Array.isArray(r.recommendations) ? r.recommendations : []).map((x) => {
      const e = obj(x);
      const ex = obj(e.explanation);
      return {
        item_id: str(e.item_id),
        score: num(e.score),
        rank: num(e.rank),
        explanation: {
          reason: str(ex.reason) as Recommendation['explanation']['reason'],
          source_items: strs(ex.source_items),
        },
        metadata: metadataFromWire(e.metadata),
      };
    }),
    metadata: {
      model_version: str(md.model_version),
      experiment_id: typeof md.experiment_id === 'string' ? md.experiment_id : null,
      variant: typeof md.variant === 'string' ? md.variant : null,
      retrieval_sources: obj(md.retrieval_sources) as Record<string, number>,
      latency_ms: {
        ...lat,
        total: lat.total ?? 0,
        retrieval: lat.retrieval ?? 0,
        ranking: lat.ranking ?? 0,
        feature_fetch: lat.feature_fetch ?? 0,
      },
    },
  };
  if (typeof md.cold_start === 'boolean') out.metadata.cold_start = md.cold_start;
  if (typeof md.cache_hit === 'boolean') out.metadata.cache_hit = md.cache_hit;
  if (typeof md.ranking_fallback === 'boolean') out.metadata.ranking_fallback = md.ranking_fallback;
  if (typeof md.degraded === 'string') out.metadata.degraded = md.degraded;
  return out;
}

export function similarResponseFromWire(v: unknown): SimilarResponse {
  const r = obj(v);
  return {
    request_id: str(r.request_id),
    source_item: str(r.source_item),
    similar_items: (Array.isArray(r.similar_items) ? r.similar_items : []).map((x) => {
      const e = obj(x);
      return {
        item_id: str(e.item_id),
        similarity_score: num(e.similarity_score),
        similarity_type: str(e.similarity_type) as SimilarItem['similarity_type'],
        common_attributes: strs(e.common_attributes),
      };
    }),
  };
}

export function feedbackResponseFromWire(v: unknown): FeedbackResponse {
  const r = obj(v);
  return {
    status: 'accepted',
    events_processed: num(r.events_processed),
    duplicates_ignored: num(r.duplicates_ignored),
  };
}

export function negativeFeedbackResponseFromWire(v: unknown): NegativeFeedbackResponse {
  const r = obj(v);
  return {
    status: str(r.status) as NegativeFeedbackResponse['status'],
    action_taken: str(r.action_taken) as NegativeFeedbackResponse['action_taken'],
  };
}
