// proto/recserve.fbs as data: one descriptor per table, fields in declaration order (the
// order IS the slot number). The codec (codec.ts) walks these, so a field added to the .fbs
// is one line here; test/flatbuffers checks that the two agree and that flatc reads what we
// write and writes what we read.

export type FieldType =
  | 'string'
  | 'int'
  | 'double'
  | 'bool'
  | 'strings'
  | { table: TableDesc }
  | { tables: TableDesc }
  /** A JSON object with free keys ↔ a vector of {key, value} tables. */
  | { map: 'string' | 'double' };

export interface FieldDesc {
  name: string;
  type: FieldType;
  /** Scalar declared `= null`: absent decodes as absent, not as 0 / false. */
  optional?: boolean;
  /** Absent string decodes as JSON null (experiment_id, variant). */
  nullable?: boolean;
  /**
   * For a string map: also collects the parent object's keys that are not fields, and
   * spreads back into the parent on decode (ItemMetadata.attributes).
   */
  rest?: boolean;
}

export interface TableDesc {
  name: string;
  fields: FieldDesc[];
}

const t = (name: string, fields: FieldDesc[]): TableDesc => ({ name, fields });

export const Location = t('Location', [
  { name: 'country', type: 'string' },
  { name: 'region', type: 'string' },
]);

export const RequestContext = t('RequestContext', [
  { name: 'device_type', type: 'string' },
  { name: 'platform', type: 'string' },
  { name: 'timestamp', type: 'string' },
  { name: 'location', type: { table: Location } },
  { name: 'session_id', type: 'string' },
]);

export const Filters = t('Filters', [
  { name: 'categories', type: 'strings' },
  { name: 'min_quality_score', type: 'double', optional: true },
]);

export const DiversitySettings = t('DiversitySettings', [
  { name: 'category_diversity', type: 'double', optional: true },
  { name: 'creator_diversity', type: 'double', optional: true },
]);

export const RecommendationRequest = t('RecommendationRequest', [
  { name: 'user_id', type: 'string' },
  { name: 'context', type: { table: RequestContext } },
  { name: 'request_type', type: 'string' },
  { name: 'num_items', type: 'int', optional: true },
  { name: 'exclude_items', type: 'strings' },
  { name: 'filters', type: { table: Filters } },
  { name: 'diversity_settings', type: { table: DiversitySettings } },
]);

export const SimilarRequest = t('SimilarRequest', [
  { name: 'item_id', type: 'string' },
  { name: 'user_id', type: 'string' },
  { name: 'num_items', type: 'int', optional: true },
  { name: 'similarity_type', type: 'string' },
  { name: 'exclude_items', type: 'strings' },
]);

export const StringEntry = t('StringEntry', [
  { name: 'key', type: 'string' },
  { name: 'value', type: 'string' },
]);

export const NumberEntry = t('NumberEntry', [
  { name: 'key', type: 'string' },
  { name: 'value', type: 'double' },
]);

export const Explanation = t('Explanation', [
  { name: 'reason', type: 'string' },
  { name: 'source_items', type: 'strings' },
]);

export const ItemMetadata = t('ItemMetadata', [
  { name: 'title', type: 'string' },
  { name: 'categories', type: 'strings' },
  { name: 'creator_id', type: 'string' },
  { name: 'attributes', type: { map: 'string' }, rest: true },
]);

export const Recommendation = t('Recommendation', [
  { name: 'item_id', type: 'string' },
  { name: 'score', type: 'double' },
  { name: 'rank', type: 'int' },
  { name: 'explanation', type: { table: Explanation } },
  { name: 'metadata', type: { table: ItemMetadata } },
]);

export const ResponseMetadata = t('ResponseMetadata', [
  { name: 'model_version', type: 'string' },
  { name: 'experiment_id', type: 'string', nullable: true },
  { name: 'variant', type: 'string', nullable: true },
  { name: 'retrieval_sources', type: { map: 'double' } },
  { name: 'latency_ms', type: { map: 'double' } },
  { name: 'cold_start', type: 'bool', optional: true },
  { name: 'cache_hit', type: 'bool', optional: true },
  { name: 'ranking_fallback', type: 'bool', optional: true },
  { name: 'degraded', type: 'string' },
]);

export const RecommendationResponse = t('RecommendationResponse', [
  { name: 'request_id', type: 'string' },
  { name: 'recommendations', type: { tables: Recommendation } },
  { name: 'metadata', type: { table: ResponseMetadata } },
]);

export const SimilarItem = t('SimilarItem', [
  { name: 'item_id', type: 'string' },
  { name: 'similarity_score', type: 'double' },
  { name: 'similarity_type', type: 'string' },
  { name: 'common_attributes', type: 'strings' },
]);

export const SimilarResponse = t('SimilarResponse', [
  { name: 'request_id', type: 'string' },
  { name: 'source_item', type: 'string' },
  { name: 'similar_items', type: { tables: SimilarItem } },
]);

/** Every table, for the schema-agreement test. */
export const ALL_TABLES: TableDesc[] = [
  Location,
  RequestContext,
  Filters,
  DiversitySettings,
  RecommendationRequest,
  SimilarRequest,
  StringEntry,
  NumberEntry,
  Explanation,
  ItemMetadata,
  Recommendation,
  ResponseMetadata,
  RecommendationResponse,
  SimilarItem,
  SimilarResponse,
];

export const FILE_IDENTIFIER = 'RSV1';
export const NAMESPACE = 'recserve.fb';
