// Which objects go where (docs/oci.md): objects of LARGE_OBJECT bytes or more are one blob each;
// smaller ones go into packs whose boundaries are content-defined over the digest-sorted list. A
// pack ends after an object with a probability proportional to its size, decided by the last four
// bytes of its digest (independent of the sort order, which follows the first bytes). So an added
// or removed object changes only the pack it falls in, and the packs around it keep their bytes
// and their blob digests. Pure.
//
// Public surface: LARGE_OBJECT, PACK_TARGET, PACK_MAX_BYTES, PACK_MAX_OBJECTS, PlannedObject, Plan, planObjects.

export const LARGE_OBJECT = 1 << 20;
/** The expected bytes in a pack. */
export const PACK_TARGET = 1 << 20;
/** Hard limits, so an unlucky run of digests cannot make a huge pack. */
export const PACK_MAX_BYTES = 4 << 20;
export const PACK_MAX_OBJECTS = 4096;

export interface PlannedObject {
  digest: string;
  size: number;
}

export interface Plan {
  packs: PlannedObject[][];
  large: PlannedObject[];
}

export function planObjects(objects: Iterable<PlannedObject>): Plan {
  const sorted = [...objects].sort((a, b) => (a.digest < b.digest ? -1 : a.digest > b.digest ? 1 : 0));
  const large = sorted.filter((o) => o.size >= LARGE_OBJECT);
  const packs: PlannedObject[][] = [];
  let current: PlannedObject[] = [];
  let bytes = 0;
  for (const o of sorted) {
    if (o.size >= LARGE_OBJECT) continue;
    current.push(o);
    bytes += o.size;
    if (endsPack(o) || bytes >= PACK_MAX_BYTES || current.length >= PACK_MAX_OBJECTS) {
      packs.push(current);
      current = [];
      bytes = 0;
    }
  }
  if (current.length > 0) packs.push(current);
  return { packs, large };
}

/** True with probability (size + 512) / PACK_TARGET (the header counts too, so empty files end packs too). */
function endsPack(o: PlannedObject): boolean {
  const key = parseInt(o.digest.slice(56), 16); // last 4 bytes, uniform in [0, 2^32)
  return key < ((o.size + 512) / PACK_TARGET) * 2 ** 32;
}
