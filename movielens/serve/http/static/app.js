// The page of `movielens serve`: search titles, rate with stars, see the folded-in list update.
// Plain DOM and fetch, nothing loaded from elsewhere, so the page works offline.
"use strict";

const rated = new Map(); // movieId -> {movieId, title, genres, rating}
let asked = 0; // the latest recommendations request; older answers are dropped

const $ = (id) => document.getElementById(id);

function say(message) {
  $("status").textContent = message || "";
}

async function api(method, path, body) {
  const options = { method, headers: {} };
  if (body !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  const answer = await fetch(path, options);
  const data = await answer.json();
  if (!answer.ok) {
    throw new Error(data.error || `HTTP ${answer.status}`);
  }
  return data;
}

function stars(movie) {
  const box = document.createElement("span");
  box.className = "stars";
  const current = rated.has(movie.movieId) ? rated.get(movie.movieId).rating : 0;
  for (let value = 1; value <= 5; value += 1) {
    const star = document.createElement("button");
    star.type = "button";
    star.textContent = "\u2605";
    star.dataset.value = String(value);
    star.setAttribute("aria-label", `rate ${movie.title} ${value} of 5`);
    star.className = value <= current ? "on" : "";
    star.addEventListener("click", () => rate(movie, value));
    box.append(star);
  }
  return box;
}

function similarLink(movie) {
  const link = document.createElement("button");
  link.type = "button";
  link.className = "link similar-link";
  link.textContent = "similar movies";
  link.addEventListener("click", () => showSimilar(movie));
  return link;
}

// One movie: title, genres, then what the list shows (predicted rating, similarity), the stars
// and the "similar movies" link.
function movieItem(movie, note) {
  const item = document.createElement("li");
  item.className = "movie";
  item.dataset.movieId = String(movie.movieId);
  const title = document.createElement("div");
  title.className = "title";
  title.textContent = movie.title;
  const genres = document.createElement("div");
  genres.className = "genres";
  genres.textContent = movie.genres.split("|").join(", ");
  const line = document.createElement("div");
  line.className = "line";
  if (note) {
    const text = document.createElement("span");
    text.className = "predicted";
    text.textContent = note;
    line.append(text);
  }
  line.append(stars(movie), similarLink(movie));
  item.append(title, genres, line);
  return item;
}

function fill(list, movies, note) {
  list.replaceChildren(...movies.map((movie) => movieItem(movie, note && note(movie))));
}

async function search(query) {
  if (!query.trim()) {
    return;
  }
  try {
    const found = await api("GET", `/movies?q=${encodeURIComponent(query)}`);
    fill($("results"), found.movies, (m) => (m.known ? "" : "not in the models"));
    say(found.found ? "" : `No title holds "${query}".`);
  } catch (error) {
    say(error.message);
  }
}

function rate(movie, rating) {
  rated.set(movie.movieId, { movieId: movie.movieId, title: movie.title, genres: movie.genres, rating });
  showRated();
  document.querySelectorAll(`li[data-movie-id="${movie.movieId}"] .stars button`).forEach((star) => {
    star.className = Number(star.dataset.value) <= rating ? "on" : "";
  });
  recommend();
}

function showRated() {
  const movies = [...rated.values()];
  $("no-ratings").hidden = movies.length > 0;
  fill($("rated"), movies, (m) => `you: ${m.rating} \u2605`);
}

async function recommend() {
  const ratings = [...rated.values()].map((m) => ({ movieId: m.movieId, rating: m.rating }));
  const mine = (asked += 1);
  const list = $("recommendations");
  list.dataset.state = "loading";
  try {
    const answer = await api("POST", "/recommendations", { ratings, n: 10 });
    if (mine !== asked) {
      return; // a newer rating has asked again
    }
    fill(list, answer.recommendations, (m) => `predicted ${m.predicted.toFixed(1)} \u2605`);
    const skipped = answer.folded_in.unknown_movies.length;
    $("ranked-by").textContent =
      (answer.personalised ? `From your ${answer.folded_in.ratings_folded_in} ratings, ranked by ` : `${answer.reason}: `) +
      answer.ranked_by + (skipped ? ` (${skipped} movie(s) the models do not know, skipped)` : "");
    list.dataset.state = "ready";
    list.dataset.rated = ratings.map((r) => r.movieId).join(",");
    say("");
  } catch (error) {
    list.dataset.state = "failed";
    say(error.message);
  }
}

async function showSimilar(movie) {
  try {
    const answer = await api("GET", `/movies/${movie.movieId}/similar?n=10`);
    $("alike-title").textContent = `Similar to ${answer.title}`;
    $("similar-by").textContent = `By ${answer.similar_by}`;
    fill($("similar"), answer.similar, (m) => `similarity ${m.similarity.toFixed(3)}`);
    $("alike").hidden = false;
    $("alike").scrollIntoView({ behavior: "smooth", block: "nearest" });
    say("");
  } catch (error) {
    say(error.message);
  }
}

async function start() {
  $("search-form").addEventListener("submit", (event) => {
    event.preventDefault();
    search($("search").value);
  });
  try {
    const health = await api("GET", "/health");
    const s = health.serving;
    $("serving").textContent =
      `${s.movies} movies, ${s.users} users; rate on the ${s.rating_scale[0]}-${s.rating_scale[1]} scale ` +
      `(whole stars here). Your ratings are folded into the models, no retraining.`;
  } catch (error) {
    say(error.message);
  }
}

document.addEventListener("DOMContentLoaded", start);
