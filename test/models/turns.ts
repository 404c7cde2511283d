// Counts turns of the event loop: a setImmediate callback that schedules itself again runs
// once per turn, so a step that never yields leaves the count where it was.
export function countTurns(): { stop(): number } {
  let turns = 0;
  let counting = true;
  const tick = () => {
    turns++;
    if (counting) setImmediate(tick);
  };
  setImmediate(tick);
  return {
    stop() {
      counting = false;
      return turns;
    },
  };
}
