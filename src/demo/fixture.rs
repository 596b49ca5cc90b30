//! One simulated football match, as a plain state machine: kick-off after a
//! short wait, a minute per tick, goals at plausible rates, half time, added
//! time, full time, and then the fixture is done and makes way for another.
//! The demo feed drives these; the tests drive them with a seeded generator.

use serde::{Deserialize, Serialize};

use super::clubs::{squad, CLUBS};

const LEAGUES: &[&str] = &["Champions League", "Europa League", "Friendly"];

/// Ticks between the fixture appearing and kick-off.
const PRE_MATCH_TICKS: u32 = 3;
/// Ticks the half-time break lasts.
const HALF_TIME_TICKS: u32 = 5;
/// Ticks a finished match stays on the board.
const FULL_TIME_TICKS: u32 = 8;
/// Goals per team per minute: about 2.7 goals a match between the two.
const HOME_GOAL_RATE: f64 = 1.5 / 90.0;
const AWAY_GOAL_RATE: f64 = 1.2 / 90.0;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Scheduled,
    Live,
    HalfTime,
    FullTime,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    Home,
    Away,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Goal {
    pub minute: u32,
    pub side: Side,
    /// Who scored it; absent for a goal added by hand on the page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scorer: Option<String>,
}

/// A match as it is stored in the `scores` cache.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fixture {
    pub league: String,
    pub home: String,
    pub away: String,
    pub home_score: u32,
    pub away_score: u32,
    pub minute: u32,
    pub status: Status,
    #[serde(default)]
    pub goals: Vec<Goal>,
    /// Ticks spent in the current status; not shown.
    #[serde(skip)]
    ticks_in_status: u32,
    /// The minute full time comes at (90 plus added time).
    #[serde(skip)]
    full_time_at: u32,
}

/// What a tick did to a fixture.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tick {
    /// The fixture changed and should be written.
    Changed,
    /// The fixture is over; remove it and start another.
    Done,
}

impl Fixture {
    /// A fixture between two clubs, neither of them among `playing`: a club
    /// plays one match at a time.
    pub fn new(rng: &mut fastrand::Rng, playing: &[&str]) -> Fixture {
        let free: Vec<&str> = CLUBS
            .iter()
            .map(|(club, _)| *club)
            .filter(|club| !playing.contains(club))
            .collect();
        assert!(free.len() >= 2, "more matches at once than the clubs can play");
        let home = free[rng.usize(..free.len())];
        let mut away = free[rng.usize(..free.len())];
        while away == home {
            away = free[rng.usize(..free.len())];
        }
        Fixture {
            league: LEAGUES[rng.usize(..LEAGUES.len())].to_string(),
            home: home.to_string(),
            away: away.to_string(),
            home_score: 0,
            away_score: 0,
            minute: 0,
            status: Status::Scheduled,
            goals: Vec::new(),
            ticks_in_status: 0,
            full_time_at: 90 + rng.u32(0..=5),
        }
    }

    /// Takes the score from a version someone else wrote (a person on the
    /// page), keeping the simulation's own clock.
    pub fn adopt_score(&mut self, written: &Fixture) {
        self.home_score = written.home_score;
        self.away_score = written.away_score;
        self.goals = written.goals.clone();
    }

    /// One game minute.
    pub fn tick(&mut self, rng: &mut fastrand::Rng) -> Tick {
        self.ticks_in_status += 1;
        match self.status {
            Status::Scheduled if self.ticks_in_status >= PRE_MATCH_TICKS => self.enter(Status::Live, 1),
            Status::Scheduled => {}
            Status::Live => {
                if rng.f64() < HOME_GOAL_RATE {
                    self.score(Side::Home, rng);
                }
                if rng.f64() < AWAY_GOAL_RATE {
                    self.score(Side::Away, rng);
                }
                // The second half starts at 46, so 45 is only ever the first's end.
                if self.minute == 45 {
                    self.enter(Status::HalfTime, 45);
                } else if self.minute >= self.full_time_at {
                    self.enter(Status::FullTime, self.minute);
                } else {
                    self.minute += 1;
                }
            }
            Status::HalfTime if self.ticks_in_status >= HALF_TIME_TICKS => self.enter(Status::Live, 46),
            Status::HalfTime => {}
            Status::FullTime if self.ticks_in_status >= FULL_TIME_TICKS => return Tick::Done,
            Status::FullTime => {}
        }
        Tick::Changed
    }

    fn enter(&mut self, status: Status, minute: u32) {
        self.status = status;
        self.minute = minute;
        self.ticks_in_status = 0;
    }

    /// The clubs this fixture is between.
    pub fn clubs(&self) -> [&str; 2] {
        [&self.home, &self.away]
    }

    fn score(&mut self, side: Side, rng: &mut fastrand::Rng) {
        let club = match side {
            Side::Home => {
                self.home_score += 1;
                &self.home
            }
            Side::Away => {
                self.away_score += 1;
                &self.away
            }
        };
        let scorer = squad(club).map(|squad| squad[rng.usize(..squad.len())].to_string());
        self.goals.push(Goal {
            minute: self.minute,
            side,
            scorer,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::clubs::CLUB_COUNT;

    /// Plays a fixture to the end; returns every state it was written in.
    fn play(seed: u64) -> Vec<Fixture> {
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut fixture = Fixture::new(&mut rng, &[]);
        let mut states = vec![fixture.clone()];
        while fixture.tick(&mut rng) == Tick::Changed {
            states.push(fixture.clone());
            assert!(states.len() < 500, "a match ends");
        }
        states
    }

    #[test]
    fn a_match_runs_kickoff_half_time_full_time_in_order() {
        for seed in 0..50 {
            let states = play(seed);
            let statuses: Vec<Status> = states.iter().map(|s| s.status).collect();
            let mut phases = statuses.clone();
            phases.dedup();
            assert_eq!(
                phases,
                [
                    Status::Scheduled,
                    Status::Live,
                    Status::HalfTime,
                    Status::Live,
                    Status::FullTime
                ],
                "seed {seed}"
            );
            let minutes: Vec<u32> = states.iter().map(|s| s.minute).collect();
            assert!(
                minutes.windows(2).all(|w| w[0] <= w[1]),
                "the clock never runs back"
            );
            let last = states.last().unwrap();
            assert!(
                (90..=95).contains(&last.minute),
                "full time at 90 plus added time"
            );
            assert!(states
                .iter()
                .any(|s| s.status == Status::HalfTime && s.minute == 45));
        }
    }

    #[test]
    fn the_score_is_the_goals_and_only_grows() {
        for seed in 0..50 {
            let states = play(seed);
            for pair in states.windows(2) {
                assert!(pair[1].home_score >= pair[0].home_score && pair[1].away_score >= pair[0].away_score);
            }
            let last = states.last().unwrap();
            let home_goals = last.goals.iter().filter(|g| g.side == Side::Home).count() as u32;
            assert_eq!(
                (home_goals, last.goals.len() as u32),
                (last.home_score, last.home_score + last.away_score)
            );
            assert!(last.goals.iter().all(|g| (1..=95).contains(&g.minute)));
        }
    }

    #[test]
    fn scores_are_plausible_on_average() {
        let total: u32 = (0..400)
            .map(|seed| play(seed).last().map_or(0, |f| f.home_score + f.away_score))
            .sum();
        let average = f64::from(total) / 400.0;
        assert!((1.8..=3.6).contains(&average), "{average} goals a match");
    }

    #[test]
    fn a_team_never_plays_itself() {
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..1000 {
            let fixture = Fixture::new(&mut rng, &[]);
            assert_ne!(fixture.home, fixture.away);
        }
    }

    #[test]
    fn a_club_busy_elsewhere_is_not_drawn() {
        let mut rng = fastrand::Rng::with_seed(3);
        let mut playing: Vec<String> = Vec::new();
        for _ in 0..CLUB_COUNT / 2 {
            let busy: Vec<&str> = playing.iter().map(String::as_str).collect();
            let fixture = Fixture::new(&mut rng, &busy);
            for club in fixture.clubs() {
                assert!(!playing.iter().any(|p| p == club), "{club} plays twice at once");
            }
            playing.extend(fixture.clubs().map(String::from));
        }
        assert_eq!(playing.len(), CLUB_COUNT, "every club is playing once");
    }

    #[test]
    fn every_goal_names_a_scorer_of_the_club_that_scored() {
        for seed in 0..50 {
            let last = play(seed).pop().unwrap();
            for goal in &last.goals {
                let club = match goal.side {
                    Side::Home => &last.home,
                    Side::Away => &last.away,
                };
                let scorer = goal.scorer.as_deref().expect("a simulated goal has a scorer");
                assert!(
                    squad(club).unwrap().contains(&scorer),
                    "{scorer} does not play for {club}"
                );
            }
        }
    }

    #[test]
    fn a_score_written_by_hand_is_adopted() {
        let mut rng = fastrand::Rng::with_seed(1);
        let mut fixture = Fixture::new(&mut rng, &[]);
        let mut edited = fixture.clone();
        edited.home_score = 4;
        fixture.adopt_score(&edited);
        assert_eq!(fixture.home_score, 4);
        let json = serde_json::to_value(&fixture).unwrap();
        assert_eq!(json["status"], "scheduled");
        assert!(json.get("ticks_in_status").is_none());
    }
}
